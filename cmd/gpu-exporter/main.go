// Command gpu-exporter serves NVIDIA GPU readings from NVML, encoder and
// decoder first. Built without cgo it serves, and says it cannot read GPUs.
package main

import "github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"

func main() { exporters.GPU().Main() }
