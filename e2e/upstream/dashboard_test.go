package upstream

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

// TestDashboardLeaderboard: the dashboard's leaderboard table, asked of a
// real Prometheus that scraped worker-exporter while two real encodes of
// one ladder ran side by side (libx264 ultrafast and medium, each profiled
// from its ingest URL, as upstream's agent sends it). Every query of the
// table answers one row per configuration, with finite values; pixels per
// joule ranks the presets in the order of their CPU time, and "energy above
// the best of its ladder" is 0 for the better one only. RAPL is the
// fixture (none here); the idle power is set, as an operator may, so that
// dynamic joules are what the fixture drew above it.
func TestDashboardLeaderboard(t *testing.T) {
	prometheus := peer.Require(t, "prometheus", "apt-get install -y prometheus")
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	raplfixture.NewMeter(t, sysfs, raplfixture.TwoSockets, watts).Start(20 * time.Millisecond)
	addr := "127.0.0.1:" + exportertest.FreePort(t)
	startProcess(t, []string{"OTEL_SDK_DISABLED=true"}, workerExporter, "--web.listen-host", "127.0.0.1",
		"--cpu.port", "0", "--gpu.port", "0", "--docker.port", "0", "--ffmpeg.port", strings.TrimPrefix(addr, "127.0.0.1:"),
		"--path.sysfs", sysfs, "--energy.interval", "500ms", "--energy.idle-watts.cpu", "30", "--stream.retention", "1s")
	waitHTTP(t, "http://"+addr+"/health")
	p := startPrometheus(t, prometheus, []byte("groups: []\n"), map[string][]string{"worker-ffmpeg": {addr}})

	const ladder = "640x360@25"
	encodes := map[string]*exec.Cmd{}
	for _, preset := range []string{"ultrafast", "medium"} {
		cmd := exec.Command(ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error",
			"-progress", "http://"+addr+"/ingest/"+preset+"?encoder=libx264&preset="+preset+"&ladder="+ladder,
			"-re", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "8",
			"-c:v", "libx264", "-preset", preset, "-s", "640x360", "-r", "25", "-threads", "1", "-f", "null", "-")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		encodes[preset] = cmd
	}
	cpu := map[string]float64{}
	for preset, cmd := range encodes {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg %s: %v", preset, err)
		}
		cpu[preset] = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	// Once a scrape after both ended is stored.
	ended := time.Now()
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		r := p.query(t, `timestamp(ffmpeg_encode_frames_total)`, time.Now())
		return len(r.Result) == 2 && r.values(t)[0] > float64(ended.Unix()+2)
	})

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ RefID, Expr string }
		}
	}
	b, err := os.ReadFile("../../examples/grafana/worker-dashboard.json")
	if err == nil {
		err = json.Unmarshal(b, &dash)
	}
	if err != nil {
		t.Fatal(err)
	}
	table := dash.Panels[len(dash.Panels)-1]
	if !strings.Contains(table.Title, "Encode configurations") || len(table.Targets) < 6 {
		t.Fatalf("the dashboard's last panel is %q with %d queries: want the leaderboard table", table.Title, len(table.Targets))
	}
	// Grafana's range: the whole run, with room.
	over := strings.NewReplacer("$__range_s", "300", "$__range", "5m")
	rows := map[string]map[string]float64{} // refId → preset → value
	for _, tg := range table.Targets {
		r := p.query(t, over.Replace(tg.Expr), time.Now())
		rows[tg.RefID] = map[string]float64{}
		for _, s := range r.Result {
			v := sampleValue(t, s.Metric, s.Value)
			if s.Metric["encoder"] != "libx264" || s.Metric["ladder"] != ladder || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Errorf("%s: row %v = %v, want libx264 on %s, a finite value", tg.RefID, s.Metric, v, ladder)
			}
			rows[tg.RefID][s.Metric["preset"]] = v
		}
		if len(rows[tg.RefID]) != 2 {
			t.Errorf("%s (%s): rows %v, want one per preset", tg.RefID, tg.Expr, rows[tg.RefID])
		}
		t.Logf("%s: %v", tg.RefID, rows[tg.RefID])
	}
	ppj, above := rows["A"], rows["F"]
	better, worse := "ultrafast", "medium"
	if cpu["medium"] < cpu["ultrafast"] {
		better, worse = worse, better
	}
	if ppj[better] <= ppj[worse] {
		t.Errorf("pixels per joule %v: not in the order of CPU time %v", ppj, cpu)
	}
	if above[better] != 0 || above[worse] <= 0 {
		t.Errorf("energy above the best of the ladder %v: want 0 for %s, above 0 for %s", above, better, worse)
	}
}
