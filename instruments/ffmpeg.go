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
	FFmpegStarted    = Metric{Name: "ffmpeg_stream_started_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: stream, Help: "Unix time at which the stream's current encode began."}
	FFmpegLag        = Metric{Name: "ffmpeg_realtime_lag_seconds", Unit: "s", Kind: Gauge, Attributes: stream, Help: "Wall time since the encode's first media time less media time encoded since: grows while a live encode falls behind realtime."}
	FFmpegQuantizer  = Metric{Name: "ffmpeg_quantizer", Kind: Gauge, Attributes: []string{"stream", "output"}, Help: "Quantizer (q) of each output stream of the encode, as -progress reports it; output is ffmpeg's FILE:INDEX."}
	FFmpegLogs       = Metric{Name: "ffmpeg_log_messages_total", Kind: Counter, Attributes: []string{"stream", "level"}, Help: "Errors and warnings in the stream's ingested ffmpeg log, by level."}
	FFmpegLines      = Metric{Name: "ffmpeg_ingest_lines_total", Kind: Counter, Attributes: []string{"result"}, Help: "Ingested lines by result: parsed, ignored (log lines, garbage), oversized (over 64 KiB, dropped) or rejected (a value that cannot be real, dropped)."}
	FFmpegRejected   = Metric{Name: "ffmpeg_ingest_rejected_requests_total", Kind: Counter, Attributes: []string{"reason"}, Help: "Ingest requests refused, by reason: method, unauthorized, stream_name, too_many_streams or stream_busy."}
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
		{Metric: FFmpegStarted, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) { e.Value(unixSeconds(s.Started)) }},
		{Metric: FFmpegLag, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) {
			if s.HasLag {
				e.Value(s.Lag)
			}
		}},
		{Metric: FFmpegQuantizer, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) {
			for _, q := range s.Quantizers {
				e.With(q.Q, attribute.String("output", q.Output))
			}
		}},
		{Metric: FFmpegLogs, Each: func(s *ffmpeg.StreamSnapshot, e *Emit) {
			if !s.HasLogs {
				return
			}
			e.Counts("level", ffmpeg.Levels[:], s.Logs[:])
		}},
		{Metric: FFmpegLines, Once: func(s *ffmpeg.Snapshot, e *Emit) {
			e.Counts("result", ffmpeg.LineResults[:], s.Lines[:])
		}},
		{Metric: FFmpegRejected, Once: func(s *ffmpeg.Snapshot, e *Emit) {
			e.Counts("reason", ffmpeg.Rejects[:], s.Rejected[:])
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

// ffmpegSeriesPerStream is the most series one stream gives one
// instrument: ffmpeg_quantizer, one per output.
const ffmpegSeriesPerStream = max(ffmpeg.MaxOutputs, int(ffmpeg.NumLevels))

// FFmpegSeriesLimit is the cardinality limit (series per instrument, as
// the OpenTelemetry SDK counts it) that serves maxStreams streams whole.
// The SDK's default, 2,000, folds every series past 1,999 into one
// otel_metric_overflow="true" series. Its limit counts that overflow
// series too, hence the one more.
func FFmpegSeriesLimit(maxStreams int) int {
	return max(maxStreams*ffmpegSeriesPerStream, len(ffmpeg.LineResults), len(ffmpeg.Rejects)) + 1
}

// RegisterFFmpeg registers the ffmpeg-exporter's instruments over hub's snapshot.
func RegisterFFmpeg(m metric.Meter, hub interface{ Snapshot() ffmpeg.Snapshot }) error {
	return ffmpegTable.register(m, func() *ffmpeg.Snapshot {
		s := hub.Snapshot()
		return &s
	})
}
