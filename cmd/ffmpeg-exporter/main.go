// Command ffmpeg-exporter serves FFmpeg encoding progress as metrics.
//
//	ffmpeg ... -progress http://localhost:9506/ingest/job42 ...
//	ffmpeg ... 2>&1 | ffmpeg-exporter --stdin --stdin.stream job42
package main

import "github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"

func main() { exporters.FFmpeg().Main() }
