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

// DockerDefaults is the docker source's configuration before flags.
func DockerDefaults() docker.Config {
	return docker.Config{Interval: 5 * time.Second, Timeout: 5 * time.Second, Concurrency: 16}
}

// Docker is container resources through the Docker Engine API.
func Docker() Source {
	cfg := DockerDefaults()
	var labels string
	var filters [4]string
	return Source{
		Name: "docker", Binary: "docker-stats-exporter", DefaultPort: 9501, GuidePort: 9501, PortEnv: "DOCKER_STATS_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.Interval, "docker.interval", cfg.Interval, "collection interval")
			fs.DurationVar(&cfg.Timeout, "docker.timeout", cfg.Timeout, "timeout of each Engine API call")
			fs.IntVar(&cfg.Concurrency, "docker.concurrency", cfg.Concurrency, "stats calls in flight at once")
			fs.StringVar(&labels, "docker.labels", "", "comma-separated container labels to add to every series as container_label_<name> (an allowlist: never all labels)")
			fs.StringVar(&filters[0], "docker.include-name", "", "only containers whose name matches this regexp")
			fs.StringVar(&filters[1], "docker.exclude-name", "", "skip containers whose name matches this regexp")
			fs.StringVar(&filters[2], "docker.include-image", "", "only containers whose image matches this regexp")
			fs.StringVar(&filters[3], "docker.exclude-image", "", "skip containers whose image matches this regexp")
		},
		Wire: func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, _ func()) error {
			var err error
			res := [4]**regexp.Regexp{&cfg.Filter.IncludeName, &cfg.Filter.ExcludeName, &cfg.Filter.IncludeImage, &cfg.Filter.ExcludeImage}
			for i, expr := range filters {
				if expr == "" {
					continue
				}
				if *res[i], err = regexp.Compile(expr); err != nil {
					return fmt.Errorf("container filter %q: %w", expr, err)
				}
			}
			for _, l := range strings.Split(labels, ",") {
				if l = strings.TrimSpace(l); l != "" {
					cfg.Labels = append(cfg.Labels, l)
				}
			}
			if cfg.Client, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
				return fmt.Errorf("docker client: %w", err)
			}
			cfg.Log = log
			src := docker.New(cfg)
			if err := instruments.RegisterDocker(p.Meter, src); err != nil {
				return err
			}
			if err := instruments.RegisterSelf(p.Meter, "docker", src.Stats); err != nil {
				return err
			}
			p.AddHealth("docker", src.Health)
			go src.Run(ctx)
			return nil
		},
	}
}
