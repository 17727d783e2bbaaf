// Command docker-stats-exporter serves container resources from the Docker
// Engine API (DOCKER_HOST and the rest of the client's environment).
package main

import "github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"

func main() { exporters.Docker().Main() }
