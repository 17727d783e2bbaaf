package instruments

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

var stream = []string{"stream"}

// The ffmpeg-exporter's metrics. The first six are the deployment guide's.
var (
	FFmpegFPS        = Metric{Name: "ffmpeg_fps", Kind: Gauge, Attributes: stream, Help: "Frames encoded per second, as ffmpeg last reported it."}
	FFmpegSpeed      = Metric{Name: "ffmpeg_speed", Kind: Gauge, Attributes: stream, Help: "Encoding speed relative to realtime (1 = realtime)."}
	FFmpegBitrate    = Metric{Name: "ffmpeg_bitrate_kbps", Kind: Gauge, Attributes: stream, Help: "Output bitrate in kbit/s, as ffmpeg last reported it."}
	FFmpegFrames     = Metric{Name: "ffmpeg_total_frames", Kind: Gauge, Attributes: stream, Help: "Frames encoded so far by the stream's current encode."}
	FFmpegDropped    = Metric{Name: "ffmpeg_dropped_frames", Kind: Gauge, Attributes: stream, Help: "Frames dropped so far by the stream's current encode."}
	FFmpegActive     = Metric{Name: "ffmpeg_stream_active", Kind: Gauge, Attributes: stream, Help: "Whether the stream is sending progress (1) or finished, closed or silent (0)."}
	FFmpegDuplicated = Metric{Name: "ffmpeg_duplicated_frames", Kind: Gauge, Attributes: stream, Help: "Frames duplicated so far by the stream's current encode."}
	FFmpegOutTime    = Metric{Name: "ffmpeg_out_time_seconds", Unit: "s", Kind: Gauge, Attributes: stream, Help: "Output timestamp reached by the encode, in seconds of media."}
	FFmpegSize       = Metric{Name: "ffmpeg_output_size_bytes", Unit: "By", Kind: Gauge, Attributes: stream, Help: "Bytes written to the output so far."}
	FFmpegLastUpdate = Metric{Name: "ffmpeg_stream_last_update_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: stream, Help: "Unix time of the stream's last progress report."}
	FFmpegLines      = Metric{Name: "ffmpeg_ingest_lines_total", Kind: Counter, Attributes: []string{"result"}, Help: "Ingested lines by result: parsed, ignored (log lines, garbage) or oversized (over 64 KiB, dropped)."}
	FFmpegRejected   = Metric{Name: "ffmpeg_ingest_rejected_requests_total", Kind: Counter, Attributes: []string{"reason"}, Help: "Ingest requests refused, by reason: method, unauthorized, stream_name or too_many_streams."}
)

// FFmpeg is the ffmpeg-exporter's catalogue.
var FFmpeg = []Metric{
	FFmpegFPS, FFmpegSpeed, FFmpegBitrate, FFmpegFrames, FFmpegDropped, FFmpegActive,
	FFmpegDuplicated, FFmpegOutTime, FFmpegSize, FFmpegLastUpdate, FFmpegLines, FFmpegRejected,
}

// ffmpegFields maps each stream reading to its metric.
var ffmpegFields = [ffmpeg.NumFields]Metric{
	ffmpeg.Frames:     FFmpegFrames,
	ffmpeg.FPS:        FFmpegFPS,
	ffmpeg.Bitrate:    FFmpegBitrate,
	ffmpeg.Speed:      FFmpegSpeed,
	ffmpeg.OutTime:    FFmpegOutTime,
	ffmpeg.Size:       FFmpegSize,
	ffmpeg.Dropped:    FFmpegDropped,
	ffmpeg.Duplicated: FFmpegDuplicated,
}

// RegisterFFmpeg registers the ffmpeg-exporter's instruments over hub's snapshot.
func RegisterFFmpeg(m metric.Meter, hub *ffmpeg.Hub) error {
	obs, err := observables(m, append(ffmpegFields[:], FFmpegActive, FFmpegLastUpdate, FFmpegLines, FFmpegRejected))
	if err != nil {
		return err
	}
	fields := obs[:ffmpeg.NumFields]
	active, lastUpdate, lines, rejected := obs[ffmpeg.NumFields], obs[ffmpeg.NumFields+1], obs[ffmpeg.NumFields+2], obs[ffmpeg.NumFields+3]
	return obs.register(m, func(_ context.Context, o metric.Observer) error {
		snap := hub.Snapshot()
		for i := range snap.Streams {
			s := &snap.Streams[i]
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("stream", s.Name)))
			for f, inst := range fields {
				if s.Has(ffmpeg.Field(f)) {
					o.ObserveFloat64(inst, s.Values[f], attrs)
				}
			}
			o.ObserveFloat64(active, boolFloat(s.Active), attrs)
			o.ObserveFloat64(lastUpdate, unixSeconds(s.LastSeen), attrs)
		}
		for i, n := range snap.Lines {
			o.ObserveFloat64(lines, float64(n), metric.WithAttributes(attribute.String("result", ffmpeg.LineResults[i])))
		}
		for i, n := range snap.Rejected {
			o.ObserveFloat64(rejected, float64(n), metric.WithAttributes(attribute.String("reason", ffmpeg.Rejects[i])))
		}
		return nil
	})
}
