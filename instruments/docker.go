package instruments

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
)

var containerAttr = []string{"container"}

// The docker-stats-exporter's metrics. The first four are the deployment
// guide's (network figures are cumulative, but the guide's names are kept,
// so they are gauges); allowlisted container labels are added to every
// per-container series as container_label_<name>.
var (
	DockerCPU         = Metric{Name: "docker_container_cpu_percent", Unit: "%", Kind: Gauge, Attributes: containerAttr, Help: "CPU use as docker stats shows it: 100 per busy core."}
	DockerMemory      = Metric{Name: "docker_container_memory_bytes", Unit: "By", Kind: Gauge, Attributes: containerAttr, Help: "Memory use less inactive page cache, as docker stats computes it."}
	DockerRx          = Metric{Name: "docker_container_network_rx_bytes", Unit: "By", Kind: Gauge, Attributes: containerAttr, Help: "Bytes received, summed over the container's interfaces."}
	DockerTx          = Metric{Name: "docker_container_network_tx_bytes", Unit: "By", Kind: Gauge, Attributes: containerAttr, Help: "Bytes sent, summed over the container's interfaces."}
	DockerMemoryLimit = Metric{Name: "docker_container_memory_limit_bytes", Unit: "By", Kind: Gauge, Attributes: containerAttr, Help: "Memory limit of the container (the host's memory when unlimited)."}
	DockerBlockRead   = Metric{Name: "docker_container_block_read_bytes_total", Unit: "By", Kind: Counter, Attributes: containerAttr, Help: "Bytes read from block devices."}
	DockerBlockWrite  = Metric{Name: "docker_container_block_written_bytes_total", Unit: "By", Kind: Counter, Attributes: containerAttr, Help: "Bytes written to block devices."}
	DockerPIDs        = Metric{Name: "docker_container_pids", Kind: Gauge, Attributes: containerAttr, Help: "Processes and threads in the container."}
	DockerState       = Metric{Name: "docker_container_state", Kind: Gauge, Attributes: []string{"container", "state"}, Help: "1 for the container's current state (created, running, paused, restarting, removing, exited, dead), 0 for the others."}
	DockerRestarts    = Metric{Name: "docker_container_restarts_total", Kind: Counter, Attributes: containerAttr, Help: "Times the daemon restarted the container."}
	DockerOOM         = Metric{Name: "docker_container_oom_kills_total", Kind: Counter, Attributes: containerAttr, Help: "OOM kills seen in the daemon's event stream since the exporter started."}
	DockerInfo        = Metric{Name: "docker_container_info", Kind: Gauge, Attributes: []string{"container", "id", "image"}, Help: "Identity of each container; always 1."}
	DockerUp          = Metric{Name: "docker_daemon_up", Kind: Gauge, Help: "Whether the Docker daemon answered the latest collection (1) or not (0; /health says why)."}
)

// dockerTable reads each metric from the snapshot or from each container in it.
var dockerTable = table[docker.Snapshot, docker.Container]{
	readings: []Reading[docker.Snapshot, docker.Container]{
		{Metric: DockerCPU, Each: func(c *docker.Container, e *Emit) {
			if c.HasCPU {
				e.Value(c.CPUPercent)
			}
		}},
		{Metric: DockerMemory, Each: withStats(func(c *docker.Container) float64 { return c.MemoryBytes })},
		{Metric: DockerRx, Each: func(c *docker.Container, e *Emit) {
			if c.HasNetwork {
				e.Value(c.RxBytes)
			}
		}},
		{Metric: DockerTx, Each: func(c *docker.Container, e *Emit) {
			if c.HasNetwork {
				e.Value(c.TxBytes)
			}
		}},
		{Metric: DockerMemoryLimit, Each: withStats(func(c *docker.Container) float64 { return c.MemoryLimitBytes })},
		{Metric: DockerBlockRead, Each: withStats(func(c *docker.Container) float64 { return c.BlockReadBytes })},
		{Metric: DockerBlockWrite, Each: withStats(func(c *docker.Container) float64 { return c.BlockWriteBytes })},
		{Metric: DockerPIDs, Each: withStats(func(c *docker.Container) float64 { return c.PIDs })},
		{Metric: DockerState, Each: func(c *docker.Container, e *Emit) {
			for _, s := range docker.States {
				e.With(boolFloat(c.State == s), attribute.String("state", s))
			}
		}},
		{Metric: DockerRestarts, Each: func(c *docker.Container, e *Emit) { e.Value(c.RestartCount) }},
		{Metric: DockerOOM, Each: func(c *docker.Container, e *Emit) { e.Value(float64(c.OOMKills)) }},
		{Metric: DockerInfo, Each: func(c *docker.Container, e *Emit) {
			e.With(1, attribute.String("id", c.ID), attribute.String("image", c.Image))
		}},
		{Metric: DockerUp, Once: func(s *docker.Snapshot, e *Emit) { e.Bool(s.Up) }},
	},
	items: func(s *docker.Snapshot) []docker.Container { return s.Containers },
	attrs: func(c *docker.Container, kvs []attribute.KeyValue) []attribute.KeyValue {
		kvs = append(kvs, attribute.String("container", c.Name))
		for _, l := range c.Labels {
			kvs = append(kvs, attribute.String(labelAttribute(l.Key), l.Value))
		}
		return kvs
	},
}

// withStats reads a figure of the stats call, which only running containers
// whose call succeeded have.
func withStats(value func(c *docker.Container) float64) func(*docker.Container, *Emit) {
	return func(c *docker.Container, e *Emit) {
		if c.HasStats {
			e.Value(value(c))
		}
	}
}

// Docker is the docker-stats-exporter's catalogue.
var Docker = dockerTable.metrics()

// RegisterDocker registers the docker-stats-exporter's instruments over src's snapshot.
func RegisterDocker(m metric.Meter, src interface{ Snapshot() *docker.Snapshot }) error {
	return dockerTable.register(m, src.Snapshot)
}

// labelAttribute names a container label's attribute: com.example.job
// becomes container_label_com_example_job, as cAdvisor names them.
func labelAttribute(key string) string {
	return "container_label_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, key)
}
