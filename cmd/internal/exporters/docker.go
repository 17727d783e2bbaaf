package exporters

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
)

// Docker is container resources through the Docker Engine API (the client
// reads DOCKER_HOST and the rest of its environment).
func Docker() Source {
	defaults := docker.Config{Interval: 5 * time.Second, Timeout: 5 * time.Second, Concurrency: 16, MaxContainers: 1000, Procfs: "/proc", ListInterval: 5 * time.Minute}
	cfg := defaults
	var labels, includeName, excludeName, includeImage, excludeImage, cgroupfs string
	cgroups := true
	maxResponse := int64(docker.DefaultMaxResponseBytes)
	return Source{
		Group: instruments.DockerExporter, DefaultPort: 9501, GuidePort: 9501, PortEnv: "DOCKER_STATS_PORT",
		Reads: ReadsProcfs | ReadsRAPL, // RAPL: containers' energy
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.Interval, "docker.interval", defaults.Interval, "collection interval")
			fs.DurationVar(&cfg.Timeout, "docker.timeout", defaults.Timeout, "timeout of each Engine API call")
			fs.IntVar(&cfg.Concurrency, "docker.concurrency", defaults.Concurrency, "containers collected at once (an inspect, and stats when running)")
			fs.IntVar(&cfg.MaxContainers, "docker.max-containers", defaults.MaxContainers, "containers served at most; those past it are left out, counted in docker_containers_skipped and named on /health")
			fs.Int64Var(&maxResponse, "docker.max-response-bytes", maxResponse, "largest Engine API response read (the container list, one stats or inspect body, one event)")
			fs.DurationVar(&cfg.ListInterval, "docker.list-interval", defaults.ListInterval, "full container list while the event stream is up, a safety net (events keep the list current between; without them every collection lists)")
			fs.BoolVar(&cgroups, "docker.cgroups", cgroups, "read running containers' figures from their cgroups under --path.cgroupfs and their network from --path.procfs where readable; false: one Engine API stats call per container per interval")
			fs.StringVar(&cgroupfs, "path.cgroupfs", "/sys/fs/cgroup", "cgroup hierarchy mount point (v1 controllers or v2), where --docker.cgroups reads containers' figures")
			fs.StringVar(&labels, "docker.labels", "", "comma-separated container labels to add to every series as container_label_<name> (an allowlist: never all labels)")
			fs.StringVar(&includeName, "docker.include-name", "", "only containers whose name matches this regexp")
			fs.StringVar(&excludeName, "docker.exclude-name", "", "skip containers whose name matches this regexp")
			fs.StringVar(&includeImage, "docker.include-image", "", "only containers whose image matches this regexp")
			fs.StringVar(&excludeImage, "docker.exclude-image", "", "skip containers whose image matches this regexp")
		},
		Open: func(r *Readers, log *slog.Logger) (OpenedSource, error) {
			c := cfg // Open builds from the flags; it never changes them
			c.Procfs = r.procfs
			if c.MaxContainers < 1 {
				return OpenedSource{}, fmt.Errorf("--docker.max-containers %d: must be at least 1", c.MaxContainers)
			}
			if maxResponse < 1 {
				return OpenedSource{}, fmt.Errorf("--docker.max-response-bytes %d: must be at least 1", maxResponse)
			}
			var err error
			for _, f := range []struct {
				flag, expr string
				re         **regexp.Regexp
			}{
				{"--docker.include-name", includeName, &c.Filter.IncludeName},
				{"--docker.exclude-name", excludeName, &c.Filter.ExcludeName},
				{"--docker.include-image", includeImage, &c.Filter.IncludeImage},
				{"--docker.exclude-image", excludeImage, &c.Filter.ExcludeImage},
			} {
				if f.expr == "" {
					continue
				}
				if *f.re, err = regexp.Compile(f.expr); err != nil {
					return OpenedSource{}, fmt.Errorf("%s %q: %w", f.flag, f.expr, err)
				}
			}
			for _, l := range strings.Split(labels, ",") {
				if l = strings.TrimSpace(l); l != "" {
					c.Labels = append(c.Labels, l)
				}
			}
			if c.Client, err = docker.NewClient(maxResponse, client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
				return OpenedSource{}, fmt.Errorf("docker client (DOCKER_HOST and friends): %w", err)
			}
			if cgroups {
				c.Cgroupfs = cgroupfs
			}
			c.Log = log
			meter := r.RAPL()
			if proc, err := r.Procfs(); err == nil {
				meter.ReadCPUWith(proc)
				c.Meter = meter
			}
			src := docker.New(c)
			return OpenedSource{Source: alongside{Source: src, readers: []interface{ Run(context.Context) }{meter}}, Register: func(p *pipeline.Pipeline) error {
				p.AddHealthNotes(instruments.DockerExporter.Name, func() []string { return src.Snapshot().Notes() })
				return instruments.RegisterDocker(p.Meter, src)
			}, SeriesLimit: instruments.DockerSeriesLimit(c.MaxContainers)}, nil
		},
	}
}
