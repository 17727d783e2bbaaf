package instruments

import (
	"context"
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

	// Docker is the docker-stats-exporter's catalogue.
	Docker = []Metric{DockerCPU, DockerMemory, DockerRx, DockerTx, DockerMemoryLimit, DockerBlockRead, DockerBlockWrite,
		DockerPIDs, DockerState, DockerRestarts, DockerOOM, DockerInfo, DockerUp}
)

// RegisterDocker registers the docker-stats-exporter's instruments over src's snapshot.
func RegisterDocker(m metric.Meter, src interface{ Snapshot() *docker.Snapshot }) error {
	obs, err := observables(m, Docker)
	if err != nil {
		return err
	}
	cpu, mem, rx, tx, limit, blkR, blkW, pids, state, restarts, oom, info, up :=
		obs[0], obs[1], obs[2], obs[3], obs[4], obs[5], obs[6], obs[7], obs[8], obs[9], obs[10], obs[11], obs[12]
	return obs.register(m, func(_ context.Context, o metric.Observer) error {
		snap := src.Snapshot()
		o.ObserveFloat64(up, boolFloat(snap.Up))
		for i := range snap.Containers {
			c := &snap.Containers[i]
			kvs := []attribute.KeyValue{attribute.String("container", c.Name)}
			for _, l := range c.Labels {
				kvs = append(kvs, attribute.String(labelAttribute(l.Key), l.Value))
			}
			attrs := metric.WithAttributeSet(attribute.NewSet(kvs...))
			if c.HasCPU {
				o.ObserveFloat64(cpu, c.CPUPercent, attrs)
			}
			if c.HasStats {
				o.ObserveFloat64(mem, c.MemoryBytes, attrs)
				o.ObserveFloat64(limit, c.MemoryLimitBytes, attrs)
				o.ObserveFloat64(blkR, c.BlockReadBytes, attrs)
				o.ObserveFloat64(blkW, c.BlockWriteBytes, attrs)
				o.ObserveFloat64(pids, c.PIDs, attrs)
			}
			if c.HasNetwork {
				o.ObserveFloat64(rx, c.RxBytes, attrs)
				o.ObserveFloat64(tx, c.TxBytes, attrs)
			}
			for _, s := range docker.States {
				o.ObserveFloat64(state, boolFloat(c.State == s), metric.WithAttributes(append(kvs, attribute.String("state", s))...))
			}
			o.ObserveFloat64(restarts, c.RestartCount, attrs)
			o.ObserveFloat64(oom, float64(c.OOMKills), attrs)
			o.ObserveFloat64(info, 1, metric.WithAttributes(append(kvs, attribute.String("id", c.ID), attribute.String("image", c.Image))...))
		}
		return nil
	})
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
