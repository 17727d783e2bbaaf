package instruments

import (
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

// ffmpegTable reads each metric from the snapshot or from each stream in it.
var ffmpegTable = table[ffmpeg.Snapshot, ffmpeg.StreamSnapshot]{
	readings: []Reading[ffmpeg.Snapshot, ffmpeg.StreamSnapshot]{
		streamField(FFmpegFPS, ffmpeg.FPS),
		streamField(FFmpegSpeed, ffmpeg.Speed),
		streamField(FFmpegBitrate, ffmpeg.Bitrate),
		streamField(FFmpegFrames, ffmpeg.Frames),
		streamField(FFmpegDropped, ffmpeg.Dropped),
		{Metric: FFmpegActive, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) { e.Bool(s.Active) }},
		streamField(FFmpegDuplicated, ffmpeg.Duplicated),
		streamField(FFmpegOutTime, ffmpeg.OutTime),
		streamField(FFmpegSize, ffmpeg.Size),
		{Metric: FFmpegLastUpdate, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) { e.Value(unixSeconds(s.LastSeen)) }},
		{Metric: FFmpegLines, Once: func(s *ffmpeg.Snapshot, e *Emit) {
			for i, n := range s.Lines {
				e.With(float64(n), attribute.String("result", ffmpeg.LineResults[i]))
			}
		}},
		{Metric: FFmpegRejected, Once: func(s *ffmpeg.Snapshot, e *Emit) {
			for i, n := range s.Rejected {
				e.With(float64(n), attribute.String("reason", ffmpeg.Rejects[i]))
			}
		}},
	},
	items: func(s *ffmpeg.Snapshot) []ffmpeg.StreamSnapshot { return s.Streams },
	attrs: func(s *ffmpeg.StreamSnapshot, kvs []attribute.KeyValue) []attribute.KeyValue {
		return append(kvs, attribute.String("stream", s.Name))
	},
}

// streamField reads field f of each stream that has reported it.
func streamField(m Metric, f ffmpeg.Field) Reading[ffmpeg.Snapshot, ffmpeg.StreamSnapshot] {
	return Reading[ffmpeg.Snapshot, ffmpeg.StreamSnapshot]{Metric: m, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) {
		if s.Has(f) {
			e.Value(s.Values[f])
		}
	}}
}

// FFmpeg is the ffmpeg-exporter's catalogue.
var FFmpeg = ffmpegTable.metrics()

// RegisterFFmpeg registers the ffmpeg-exporter's instruments over hub's snapshot.
func RegisterFFmpeg(m metric.Meter, hub interface{ Snapshot() ffmpeg.Snapshot }) error {
	return ffmpegTable.register(m, func() *ffmpeg.Snapshot {
		s := hub.Snapshot()
		return &s
	})
}
