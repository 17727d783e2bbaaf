package instruments

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
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
	DockerRestarts    = Metric{Name: "docker_container_restarts_total", Kind: Counter, Attributes: containerAttr, Help: "Times the daemon restarted the container, from inspect; left out while inspect fails."}
	DockerOOM         = Metric{Name: "docker_container_oom_kills_total", Kind: Counter, Attributes: containerAttr, Help: "OOM kills seen in the daemon's event stream since the exporter started."}
	DockerInfo        = Metric{Name: "docker_container_info", Kind: Gauge, Attributes: []string{"container", "id", "image"}, Help: "Identity of each container; always 1."}
	DockerUp          = Metric{Name: "docker_daemon_up", Kind: Gauge, Help: "Whether the Docker daemon answered the latest collection (1) or not (0; /health says why)."}

	DockerCPUSeconds       = Metric{Name: "docker_container_cpu_usage_seconds_total", Unit: "s", Kind: Counter, Attributes: containerAttr, Help: "CPU time the container used (the daemon's cpu_usage.total_usage)."}
	DockerThrottledSeconds = Metric{Name: "docker_container_cpu_throttled_seconds_total", Unit: "s", Kind: Counter, Attributes: containerAttr, Help: "Time the container was throttled by its CPU quota; only containers with a quota whose periods the daemon reports."}
	DockerThrottledPeriods = Metric{Name: "docker_container_cpu_throttled_periods_total", Kind: Counter, Attributes: containerAttr, Help: "CFS periods in which the container used up its CPU quota; only containers with a quota whose periods the daemon reports."}
	DockerPackets          = Metric{Name: "docker_container_network_packets_total", Kind: Counter, Attributes: directionAttrs, Help: "Packets received (rx) and sent (tx), summed over the container's interfaces; left out when the daemon counts bytes but no packets (podman)."}
	DockerNetErrors        = Metric{Name: "docker_container_network_errors_total", Kind: Counter, Attributes: directionAttrs, Help: "Receive (rx) and transmit (tx) errors, summed over the container's interfaces."}
	DockerNetDropped       = Metric{Name: "docker_container_network_dropped_total", Kind: Counter, Attributes: directionAttrs, Help: "Packets dropped on receive (rx) and transmit (tx), summed over the container's interfaces."}
	DockerHealth           = Metric{Name: "docker_container_health_status", Kind: Gauge, Attributes: []string{"container", "status"}, Help: "1 for a running container's healthcheck status (starting, healthy, unhealthy; none without a healthcheck), 0 for the others."}
	DockerExitCode         = Metric{Name: "docker_container_exit_code", Kind: Gauge, Attributes: containerAttr, Help: "Exit code of an exited container."}
	DockerStartTime        = Metric{Name: "docker_container_start_time_seconds", Unit: "s", Kind: Gauge, Attributes: containerAttr, Help: "Unix time the container last started."}
	DockerTotalCPU         = Metric{Name: "docker_containers_total_cpu_percent", Unit: "%", Kind: Gauge, Help: "Sum of docker_container_cpu_percent over the containers served."}
	DockerEngineCPU        = Metric{Name: "docker_engine_cpu_percent", Unit: "%", Kind: Gauge, Help: "CPU use of the container engine's own process (dockerd, or podman's API service), 100 per busy core, from /proc; left out when the process is not found (the debug log says why)."}
	DockerInspectErrors    = Metric{Name: "docker_inspect_errors_total", Kind: Counter, Help: "Container inspect calls that failed since the exporter started; the container's restart, health, exit code and start time series are left out meanwhile."}
	DockerFiguresPath      = Metric{Name: "docker_container_figures_path", Kind: Gauge, Attributes: []string{"container", "path"}, Help: "1 for the path a running container's figures come by, 0 for the other: cgroup (its cgroup files and /proc/<pid>/net/dev, read by the exporter) or stats (one Engine API stats call per interval; /health says why)."}
	DockerEnergy           = Metric{Name: "docker_container_energy_joules_total", Unit: "J", Kind: Counter, Attributes: []string{"container", "device", "mode"}, Help: "CPU energy (RAPL package and dram) charged to the container since the exporter first read it, by its cgroup CPU time: mode dynamic is its share of what work added over idle power (its CPU time over the machine's busy CPU time), mode idle its share of idle power (its CPU time over all of the machine's); left out without RAPL. GPU energy is not charged to containers."}
	DockerSkipped          = Metric{Name: "docker_containers_skipped", Kind: Gauge, Help: "Matching containers left out at the latest collection: more than --docker.max-containers (running, then oldest, are kept)."}
)

var directionAttrs = []string{"container", "direction"}

// dockerTable reads each metric from the snapshot or from each container in it.
var dockerTable = table[docker.Snapshot, docker.Container]{
	readings: []Reading[docker.Snapshot, docker.Container]{
		dockerField(DockerCPU, func(c *docker.Container) (float64, bool) { return c.CPUPercent, c.HasCPU }),
		dockerField(DockerMemory, func(c *docker.Container) (float64, bool) { return c.MemoryBytes, c.HasMemory }),
		dockerField(DockerRx, func(c *docker.Container) (float64, bool) { return c.RxBytes, c.HasNetwork }),
		dockerField(DockerTx, func(c *docker.Container) (float64, bool) { return c.TxBytes, c.HasNetwork }),
		dockerField(DockerMemoryLimit, func(c *docker.Container) (float64, bool) { return c.MemoryLimitBytes, c.HasMemoryLimit }),
		dockerField(DockerBlockRead, func(c *docker.Container) (float64, bool) { return c.BlockReadBytes, c.HasStats }),
		dockerField(DockerBlockWrite, func(c *docker.Container) (float64, bool) { return c.BlockWriteBytes, c.HasStats }),
		dockerField(DockerPIDs, func(c *docker.Container) (float64, bool) { return c.PIDs, c.HasPIDs }),
		{Metric: DockerEnergy, Each: func(c *docker.Container, e *Emit) {
			if c.HasEnergy {
				for m, j := range c.Energy {
					e.With(j, attribute.String("device", energy.Devices[energy.CPU]), attribute.String("mode", energy.Modes[m]))
				}
			}
		}},
		{Metric: DockerState, Each: func(c *docker.Container, e *Emit) {
			for _, s := range docker.States {
				e.With(boolFloat(c.State == s), attribute.String("state", s))
			}
		}},
		dockerField(DockerRestarts, func(c *docker.Container) (float64, bool) { return c.RestartCount, c.HasInspect }),
		{Metric: DockerOOM, Each: func(c *docker.Container, e *Emit) { e.Value(float64(c.OOMKills)) }},
		{Metric: DockerInfo, Each: func(c *docker.Container, e *Emit) {
			e.With(1, attribute.String("id", c.ID), attribute.String("image", c.Image))
		}},
		{Metric: DockerUp, Once: func(s *docker.Snapshot, e *Emit) { e.Bool(s.Up) }},

		dockerField(DockerCPUSeconds, func(c *docker.Container) (float64, bool) { return c.CPUSeconds, c.HasCPUUsage }),
		dockerField(DockerThrottledSeconds, func(c *docker.Container) (float64, bool) { return c.ThrottledSeconds, c.HasThrottling }),
		dockerField(DockerThrottledPeriods, func(c *docker.Container) (float64, bool) { return c.ThrottledPeriods, c.HasThrottling }),
		{Metric: DockerPackets, Each: perDirection(func(p docker.Packets) float64 { return p.Packets })},
		{Metric: DockerNetErrors, Each: perDirection(func(p docker.Packets) float64 { return p.Errors })},
		{Metric: DockerNetDropped, Each: perDirection(func(p docker.Packets) float64 { return p.Dropped })},
		{Metric: DockerHealth, Each: func(c *docker.Container, e *Emit) {
			if c.HasInspect && c.Health != "" && c.State == "running" {
				for _, s := range docker.HealthStatuses {
					e.With(boolFloat(c.Health == s), attribute.String("status", s))
				}
			}
		}},
		dockerField(DockerExitCode, func(c *docker.Container) (float64, bool) { return c.ExitCode, c.HasInspect && c.State == "exited" }),
		dockerField(DockerStartTime, func(c *docker.Container) (float64, bool) {
			return unixSeconds(c.StartedAt), c.HasInspect && !c.StartedAt.IsZero()
		}),
		{Metric: DockerTotalCPU, Once: func(s *docker.Snapshot, e *Emit) {
			sum, some := 0.0, false
			for _, c := range s.Containers {
				if c.HasCPU {
					sum, some = sum+c.CPUPercent, true
				}
			}
			if some {
				e.Value(sum)
			}
		}},
		{Metric: DockerEngineCPU, Once: func(s *docker.Snapshot, e *Emit) {
			if s.HasEngineCPU {
				e.Value(s.EngineCPUPercent)
			}
		}},
		{Metric: DockerInspectErrors, Once: func(s *docker.Snapshot, e *Emit) { e.Value(float64(s.InspectErrors)) }},
		{Metric: DockerFiguresPath, Each: func(c *docker.Container, e *Emit) {
			if c.State == "running" && c.Path != "" {
				for _, p := range docker.Paths {
					e.With(boolFloat(c.Path == p), attribute.String("path", p))
				}
			}
		}},
		{Metric: DockerSkipped, Once: func(s *docker.Snapshot, e *Emit) {
			if s.Up {
				e.Value(float64(s.Skipped))
			}
		}},
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

// DockerSeriesLimit is the most series one docker instrument has with at
// most maxContainers containers: docker_container_state's one per state per
// container is the most of any, and the SDK keeps one more for its overflow
// series. Give the MeterProvider at least this cardinality limit so that no
// container served is folded into otel_metric_overflow.
func DockerSeriesLimit(maxContainers int) int {
	return maxContainers*max(len(docker.States), len(docker.HealthStatuses), len(directions)) + 1
}

var directions = []string{"rx", "tx"}

// perDirection reads one of the packet counters for each direction the
// daemon counts packets in.
func perDirection(value func(docker.Packets) float64) func(*docker.Container, *Emit) {
	return func(c *docker.Container, e *Emit) {
		for i, p := range []docker.Packets{c.Rx, c.Tx} {
			if p.Known {
				e.With(value(p), attribute.String("direction", directions[i]))
			}
		}
	}
}

// dockerField reads one figure of each container, left out where the
// daemon did not tell it (known is false).
func dockerField(m Metric, read func(*docker.Container) (value float64, known bool)) Reading[docker.Snapshot, docker.Container] {
	return Reading[docker.Snapshot, docker.Container]{Metric: m, Each: func(c *docker.Container, e *Emit) {
		if v, ok := read(c); ok {
			e.Value(v)
		}
	}}
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
