// Command cpu-exporter serves CPU energy and power from RAPL (powercap).
package main

import "github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"

func main() { exporters.CPU().Main() }
