package main

// End-to-end tests of the built cpu-exporter on sysfs fixture trees (these
// machines have no RAPL), side by side with the real node_exporter from
// Debian's prometheus-node-exporter on the same trees.

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

var binary string

func TestMain(m *testing.M) { exportertest.Main(m, "cpu-exporter", &binary) }

// ourLabels maps each fixture zone's class/powercap entry to the labels the
// cpu-exporter should give it.
func ourLabels(host []raplfixture.Zone) map[string]map[string]string {
	pkgOf := map[string]string{}
	for _, z := range host {
		if n, ok := strings.CutPrefix(z.Name, "package-"); ok {
			pkgOf[z.ID] = n
		}
	}
	out := map[string]map[string]string{}
	for _, z := range host {
		l := map[string]string{}
		switch {
		case strings.HasPrefix(z.Name, "package-"):
			l["package"], l["zone"] = pkgOf[z.ID], "package"
		case z.Name == "psys":
			l["package"], l["zone"] = "", "psys"
		default:
			l["package"], l["zone"] = pkgOf[z.ID[:strings.LastIndexByte(z.ID, ':')]], z.Name
		}
		out[z.ID] = l
	}
	return out
}

var nodeSeries = regexp.MustCompile(`^node_rapl_(\w+)_joules_total\{index="\d+",path="[^"]*/class/powercap/([^"]+)"\} (\S+)$`)

// nodeExporter runs node_exporter's rapl collector alone on root.
func nodeExporter(t *testing.T, root string) string {
	t.Helper()
	bin := peer.Require(t, "prometheus-node-exporter", "apt-get install -y prometheus-node-exporter")
	addr := "127.0.0.1:" + exportertest.FreePort(t)
	cmd := exec.Command(bin, "--collector.disable-defaults", "--collector.rapl", "--path.sysfs="+root, "--web.listen-address="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return "http://" + addr + "/metrics"
}

// TestSideBySideWithNodeExporter: before any wrap, every zone's
// rapl_energy_joules_total equals node_exporter's node_rapl_<zone>_joules_total
// for the same zone, on every host layout; the mmio duplicate that
// node_exporter counts twice is counted once here.
func TestSideBySideWithNodeExporter(t *testing.T) {
	for name, host := range map[string][]raplfixture.Zone{
		"one socket": raplfixture.OneSocket, "two sockets": raplfixture.TwoSockets,
		"laptop": raplfixture.Laptop, "AMD": raplfixture.AMD,
	} {
		t.Run(name, func(t *testing.T) {
			root := raplfixture.Build(t, t.TempDir(), host)
			ours := exportertest.Start(t, binary, nil, nil, "--path.sysfs", root, "--rapl.interval", "50ms")
			node := nodeExporter(t, root)
			labels := ourLabels(host)

			compare := func() (mismatch string) {
				_, text := exportertest.Get(t, node)
				scraped := ours.Scrape(t)
				compared := 0
				for _, line := range strings.Split(text, "\n") {
					m := nodeSeries.FindStringSubmatch(line)
					if m == nil || strings.HasPrefix(m[2], "intel-rapl-mmio") {
						continue
					}
					compared++
					key := otlptest.Key("rapl_energy_joules_total", labels[m[2]])
					if got, ok := scraped[key]; !ok || got != mustFloat(t, m[3]) {
						return key + ": ours " + ftoa(got) + ", node_exporter " + m[3]
					}
				}
				if compared != msrZones(host) {
					return "compared " + ftoa(float64(compared)) + " zones of " + ftoa(float64(msrZones(host)))
				}
				return ""
			}
			if m := compare(); m != "" {
				t.Fatal(m)
			}
			// The counters move; both still agree once we have sampled.
			for id, z := range host {
				raplfixture.SetEnergy(t, root, z.ID, z.EnergyUJ+uint64(id+1)*1_234_567)
			}
			var mismatch string
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("last mismatch: %s", mismatch)
				}
			})
			exportertest.WaitFor(t, 5*time.Second, func() bool { mismatch = compare(); return mismatch == "" })

			s := ours.Scrape(t)
			if want := float64(msrZones(host)); s["rapl_zones_discovered{}"] != want {
				t.Errorf("rapl_zones_discovered %v, want %v", s["rapl_zones_discovered{}"], want)
			}
			peer.CheckMetrics(t, ours.ScrapeText(t))
		})
	}
}

// TestNoPowercapThenLoaded: with no powercap the exporter serves, /health
// says why, and it notices the zones when they appear, without a restart.
func TestNoPowercapThenLoaded(t *testing.T) {
	root := t.TempDir()
	p := exportertest.Start(t, binary, nil, nil, "--path.sysfs", root, "--rapl.interval", "50ms")
	code, body := p.Get(t, "/health")
	var h pipeline.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || h.Status != "error" || !strings.Contains(h.Sources["cpu"].Error, "no powercap") {
		t.Errorf("health %d %s", code, body)
	}
	if s := p.Scrape(t); s["rapl_available{}"] != 0 || s["rapl_zones_discovered{}"] != 0 {
		t.Errorf("scrape without RAPL: %v", s)
	}
	if !strings.Contains(p.Logs.String(), "RAPL not fully readable") {
		t.Errorf("log does not say RAPL is unreadable:\n%s", p.Logs.String())
	}

	raplfixture.Build(t, root, raplfixture.OneSocket)
	exportertest.WaitFor(t, 5*time.Second, func() bool {
		code, _ := p.Get(t, "/health")
		return code == http.StatusOK
	})
	if s := p.Scrape(t); s["rapl_available{}"] != 1 || s[`rapl_energy_joules_total{package="0",zone="package"}`] != 1 {
		t.Errorf("after powercap appeared: %v", s)
	}
}

// TestPortFromEnvironment: the guide's CPU_EXPORTER_PORT, with no flag.
func TestPortFromEnvironment(t *testing.T) {
	port := exportertest.FreePort(t)
	cmd := exec.Command(binary, "--path.sysfs", raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket))
	cmd.Env = append(os.Environ(), "CPU_EXPORTER_PORT="+port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h pipeline.Health
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Status == "ok"
	})
}

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// msrZones counts the zones that are not the intel-rapl-mmio view of another.
func msrZones(host []raplfixture.Zone) int {
	n := 0
	for _, z := range host {
		if !strings.HasPrefix(z.ID, "intel-rapl-mmio") {
			n++
		}
	}
	return n
}

// TestUndecodableZoneName: package 1's name is not UTF-8 (a fixture: no
// RAPL here). Its zones are refused once, named on /health and in one log
// line; package 0 keeps being served, and no scrape logs an error.
func TestUndecodableZoneName(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.TwoSockets...)
	host[2].Name = "package-\xff\xfe" // intel-rapl:1
	root := raplfixture.Build(t, t.TempDir(), host)
	p := exportertest.Start(t, binary, nil, nil, "--path.sysfs", root, "--rapl.interval", "50ms")

	// Several samples and scrapes.
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		return p.Scrape(t)[`worker_exporter_collection_errors_total{source="cpu"}`] >= 5
	})
	s := p.Scrape(t)
	if s[`rapl_energy_joules_total{package="0",zone="package"}`] != 10 || s[`rapl_energy_joules_total{package="0",zone="dram"}`] != 2 || s["rapl_zones_discovered{}"] != 2 {
		t.Errorf("package 0 not served: %v", s)
	}
	code, body := p.Get(t, "/health")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "intel-rapl:1/name") || !strings.Contains(body, "UTF-8") {
		t.Errorf("health %d %s", code, body)
	}
	logs := p.Logs.String()
	if strings.Contains(logs, "level=ERROR") || strings.Count(logs, "RAPL not fully readable") != 1 {
		t.Errorf("want one warning and no error in the log:\n%s", logs)
	}
	peer.CheckMetrics(t, p.ScrapeText(t))
}

// TestImplausibleReading: a counter that falls far from its range (a
// fixture: no RAPL here) is no wrap: the total stays, the reading is counted
// as implausible and logged, and the next change is measured from it.
func TestImplausibleReading(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket) // 1 J
	p := exportertest.Start(t, binary, nil, nil, "--path.sysfs", root, "--rapl.interval", "50ms")
	const energy, implausible = `rapl_energy_joules_total{package="0",zone="package"}`, `rapl_implausible_readings_total{package="0",zone="package"}`
	exportertest.WaitFor(t, 10*time.Second, func() bool { return p.Scrape(t)[energy] == 1 })

	raplfixture.SetEnergy(t, root, "intel-rapl:0", 500_000) // 0.5 J: would be a wrap adding 262 kJ
	exportertest.WaitFor(t, 10*time.Second, func() bool { return p.Scrape(t)[implausible] == 1 })
	if s := p.Scrape(t); s[energy] != 1 {
		t.Errorf("energy %v J after the implausible reading, want 1", s[energy])
	}
	if logs := p.Logs.String(); !strings.Contains(logs, "intel-rapl:0/energy_uj: implausible reading") || !strings.Contains(logs, "from 1000000 to 500000") {
		t.Errorf("the log does not name the reading:\n%s", logs)
	}

	raplfixture.SetEnergy(t, root, "intel-rapl:0", 2_000_000) // 1.5 J more than the implausible reading
	exportertest.WaitFor(t, 10*time.Second, func() bool { return p.Scrape(t)[energy] == 2.5 })
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		code, _ := p.Get(t, "/health")
		return code == http.StatusOK
	})
	if s := p.Scrape(t); s[implausible] != 1 {
		t.Errorf("%v implausible readings, want 1", s[implausible])
	}
}
