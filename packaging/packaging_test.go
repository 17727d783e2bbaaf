// Package packaging proves the .deb and .rpm that `make package` builds: what
// they hold, and on Debian (root; CI) the .deb's whole life as an operator
// lives it: install, the units verified and started, an upgrade over an
// edited environment file, remove and purge leaving nothing behind.
package packaging

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

const root = ".."

// The units, the environment files (one per unit) and the binaries the
// packages install.
var (
	units = []string{"ffmpeg-worker-exporter", "ffmpeg-cpu-exporter", "ffmpeg-gpu-exporter", "ffmpeg-stats-exporter", "ffmpeg-docker-stats-exporter"}
	bins  = []string{"worker-exporter", "cpu-exporter", "gpu-exporter", "ffmpeg-exporter", "docker-stats-exporter"}
)

func wantFiles() []string {
	var files []string
	for _, u := range units {
		files = append(files, "/usr/lib/systemd/system/"+u+".service", "/etc/default/"+u)
	}
	for _, b := range bins {
		files = append(files, "/opt/ffmpeg-rtmp/worker/bin/"+b)
	}
	files = append(files, "/usr/bin/worker-exporter")
	slices.Sort(files)
	return files
}

func confFiles() []string {
	var files []string
	for _, u := range units {
		files = append(files, "/etc/default/"+u)
	}
	slices.Sort(files)
	return files
}

// built is `make package` run once per test binary, twice: this tree's
// version, and a next one for the upgrade.
var built struct {
	once    sync.Once
	dir     string // the packages
	version string // packaging/version.sh
	next    string // version + ".1"
	err     error
	cleanup func()
}

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("the packages built and installed")
	code := m.Run()
	if built.cleanup != nil {
		built.cleanup()
	}
	os.Exit(code)
}

// packages builds the .deb and .rpm of this tree and of the next version,
// and returns their paths by version and packager.
func packages(t *testing.T) (deb, rpm map[string]string) {
	t.Helper()
	nfpm := peer.RequireFile(t, filepath.Join(root, "bin", "nfpm"), "make nfpm")
	mk := peer.Require(t, "make", "apt-get install -y make")
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "packaging-test")
		if err != nil {
			built.err = err
			return
		}
		built.cleanup = func() { os.RemoveAll(dir) }
		out, err := exec.Command(filepath.Join(root, "packaging", "version.sh")).Output()
		if err != nil {
			built.err = fmt.Errorf("packaging/version.sh: %v", err)
			return
		}
		built.version = strings.TrimSpace(string(out))
		built.next = built.version + ".1"
		abs, _ := filepath.Abs(nfpm)
		for _, v := range []string{built.version, built.next} {
			cmd := exec.Command(mk, "package", "BIN="+dir, "NFPM="+abs, "PKG_VERSION="+v)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = fmt.Errorf("make package PKG_VERSION=%s: %v\n%s", v, err, out)
				return
			}
		}
		built.dir = filepath.Join(dir, "packages")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	deb, rpm = map[string]string{}, map[string]string{}
	for _, v := range []string{built.version, built.next} {
		deb[v] = one(t, filepath.Join(built.dir, "worker-exporters_"+v+"_*.deb"))
		rpm[v] = one(t, filepath.Join(built.dir, "worker-exporters-"+v+"-1.*.rpm"))
	}
	return deb, rpm
}

func one(t *testing.T, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(glob)
	if len(m) != 1 {
		t.Fatalf("%s: %d packages, want 1", glob, len(m))
	}
	return m[0]
}

// TestVersion: git describe as dpkg and rpm order it, naming the commit.
func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(root, "packaging", "version.sh")).Output()
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^[0-9][0-9A-Za-z.+]*$`).MatchString(v) {
		t.Errorf("version %q: want a digit first, then only what dpkg and rpm both take", v)
	}
	desc, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty", "--abbrev=7").Output()
	if err != nil {
		t.Skipf("no git history here: %v", err)
	}
	if hash := regexp.MustCompile(`(?:^|-g)([0-9a-f]{7})\b`).FindStringSubmatch(string(desc)); hash != nil && !strings.Contains(v, "g"+hash[1]) {
		t.Errorf("version %q does not name git describe's commit (%s)", v, desc)
	}
	if strings.Contains(string(desc), "-dirty") != strings.Contains(v, "dirty") {
		t.Errorf("version %q and git describe %q disagree on uncommitted changes", v, desc)
	}
}

// TestRPM: rpm reads the .rpm (Debian's rpm package): its files, its
// configuration files, and the scripts that create the user.
func TestRPM(t *testing.T) {
	rpmBin := peer.Require(t, "rpm", "apt-get install -y rpm")
	_, rpms := packages(t)
	pkg := rpms[built.version]
	query := func(args ...string) []string {
		out, err := exec.Command(rpmBin, append(args, pkg)...).CombinedOutput()
		if err != nil {
			t.Fatalf("rpm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.Fields(string(out))
	}
	var files []string
	for _, f := range query("-qlp") {
		if !slices.Contains([]string{"/opt/ffmpeg-rtmp", "/opt/ffmpeg-rtmp/worker", "/opt/ffmpeg-rtmp/worker/bin"}, f) {
			files = append(files, f)
		}
	}
	slices.Sort(files)
	if !slices.Equal(files, wantFiles()) {
		t.Errorf("rpm -qlp:\n%v\nwant\n%v", files, wantFiles())
	}
	if got := query("-qcp"); !slices.Equal(got, confFiles()) {
		t.Errorf("rpm -qcp (configuration files): %v, want %v", got, confFiles())
	}
	if got := strings.Join(query("-qp", "--queryformat", "%{VERSION}"), ""); got != built.version {
		t.Errorf("rpm version %q, want %q", got, built.version)
	}
	scripts := strings.Join(query("-qp", "--scripts"), " ")
	for _, want := range []string{"useradd", "ffmpeg-worker", "systemctl disable"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scripts lack %q:\n%s", want, scripts)
		}
	}
}

// TestDeb: dpkg installs the .deb; the units pass systemd-analyze verify and
// start as their user; an upgrade keeps an edited environment file; remove
// and purge leave the machine as it was.
func TestDeb(t *testing.T) {
	dpkg := peer.Require(t, "dpkg", "a Debian machine")
	analyze := peer.Require(t, "systemd-analyze", "apt-get install -y systemd")
	setpriv := peer.Require(t, "setpriv", "apt-get install -y util-linux")
	peer.RequireRoot(t, "dpkg -i installs the package on this machine")
	if out, err := exec.Command("dpkg-query", "-W", "worker-exporters").CombinedOutput(); err == nil {
		peer.Missing(t, "worker-exporters is installed here already ("+strings.TrimSpace(string(out))+"): the test would remove it")
	}
	if exec.Command("getent", "passwd", "ffmpeg-worker").Run() == nil {
		peer.Missing(t, "user ffmpeg-worker exists here already: the test would delete it on purge")
	}
	debs, _ := packages(t)
	before := snapshot(t)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command(dpkg, "--purge", "worker-exporters").Run() })

	// Install.
	run(dpkg, "-i", debs[built.version])
	if got := run("dpkg-query", "-W", "-f", "${Version}", "worker-exporters"); got != built.version {
		t.Errorf("installed version %q, want %q", got, built.version)
	}
	id := run("id", "ffmpeg-worker")
	for _, g := range []string{"video", "docker"} {
		if exec.Command("getent", "group", g).Run() == nil && !strings.Contains(id, "("+g+")") {
			t.Errorf("ffmpeg-worker is not in group %s, which this host has: %s", g, id)
		}
	}
	if out, err := exec.Command("getent", "passwd", "ffmpeg-worker").Output(); err != nil || !strings.Contains(string(out), "/usr/sbin/nologin") {
		t.Errorf("ffmpeg-worker: %q %v, want a system user with no login", out, err)
	}
	// --version names the commit (or tag) the package's version does.
	version := run("worker-exporter", "--version")
	want := regexp.MustCompile(`\bg([0-9a-f]{7})\b`).FindStringSubmatch(built.version) // the commit
	if want == nil {
		want = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)$`).FindStringSubmatch(built.version) // the tag
	}
	if want == nil {
		t.Errorf("package version %q names neither a commit nor a tag", built.version)
	} else if !strings.Contains(version, want[1]) {
		t.Errorf("worker-exporter --version: %q, want the package's version (%s)", version, want[1])
	}
	for _, b := range bins[1:] {
		if out := run("/opt/ffmpeg-rtmp/worker/bin/"+b, "--version"); !strings.HasPrefix(out, b+", version") {
			t.Errorf("%s --version: %q", b, out)
		}
	}
	var installed []string
	for _, u := range units {
		installed = append(installed, "/usr/lib/systemd/system/"+u+".service")
	}
	if out, err := exec.Command(analyze, append([]string{"verify"}, installed...)...).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
	}

	// Configure worker-exporter through its environment file (other ports,
	// so as not to meet other tests on the guide's), then start its unit.
	ports := map[string]string{"cpu": exportertest.FreePort(t), "ffmpeg": exportertest.FreePort(t)}
	env := "/etc/default/ffmpeg-worker-exporter"
	edited := readFile(t, env) + fmt.Sprintf("# edited by the packaging test\nARGS=\"--cpu.port=%s --ffmpeg.port=%s --gpu.port=0 --docker.port=0\"\n", ports["cpu"], ports["ffmpeg"])
	must(t, os.WriteFile(env, []byte(edited), 0o644))
	stop := startUnit(t, setpriv, "/usr/lib/systemd/system/ffmpeg-worker-exporter.service", true)
	for _, p := range ports {
		waitHealth(t, p)
	}
	stop()

	// Upgrade: the edit stays.
	run("systemctl", "enable", "ffmpeg-worker-exporter.service")
	run(dpkg, "-i", debs[built.next])
	if got := run("dpkg-query", "-W", "-f", "${Version}", "worker-exporters"); got != built.next {
		t.Errorf("version after the upgrade %q, want %q", got, built.next)
	}
	if got := readFile(t, env); got != edited {
		t.Errorf("%s after the upgrade:\n%s\nwant the edited one:\n%s", env, got, edited)
	}

	// Remove: the environment files stay (configuration), nothing else; purge: nothing at all.
	run(dpkg, "-r", "worker-exporters")
	for _, f := range wantFiles() {
		_, err := os.Lstat(f)
		if slices.Contains(confFiles(), f) != (err == nil) {
			t.Errorf("after dpkg -r: %s: %v (configuration stays, the rest goes)", f, err)
		}
	}
	if links, _ := filepath.Glob("/etc/systemd/system/*.wants/ffmpeg-*"); len(links) > 0 {
		t.Errorf("after dpkg -r: the units are still enabled: %v", links)
	}
	run(dpkg, "--purge", "worker-exporters")
	after := snapshot(t)
	for k, b := range before {
		if after[k] != b {
			t.Errorf("after purge, %s differs from before the install:\nbefore:\n%s\nafter:\n%s", k, b, after[k])
		}
	}
}

// snapshot is what the package may touch: the paths under its directories,
// and the users and groups.
func snapshot(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{}
	for _, dir := range []string{"/etc", "/opt", "/usr/lib/systemd", "/usr/bin"} {
		var paths []string
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			if err == nil && !strings.HasSuffix(p, "-") { // passwd-, group-: the tools' backups
				paths = append(paths, p)
			}
			return nil
		})
		s[dir] = strings.Join(paths, "\n")
	}
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		b, _ := os.ReadFile(f)
		s[f] = string(b)
	}
	return s
}

// startUnit starts the unit installed at path: with systemctl where systemd
// runs this machine (and sees the unit), else as systemd would: its user and
// groups, its ambient capabilities, its environment and environment file,
// its ExecStart.
func startUnit(t *testing.T, setpriv, path string, viaSystemd bool) (stop func()) {
	t.Helper()
	unit := strings.TrimSuffix(filepath.Base(path), ".service")
	if _, err := os.Stat("/run/systemd/system"); err == nil && viaSystemd {
		if out, err := exec.Command("systemctl", "start", unit).CombinedOutput(); err != nil {
			t.Fatalf("systemctl start %s: %v\n%s", unit, err, out)
		}
		return func() { exec.Command("systemctl", "stop", unit).Run() }
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(readFile(t, path), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	var caps []string
	for _, c := range strings.Fields(strings.Join(keys["AmbientCapabilities"], " ")) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	// systemd's environment: Environment=, then each EnvironmentFile
	// (KEY=VALUE lines, the value's quotes removed); ExecStart's unquoted
	// $VAR splits on white space, as sh does.
	env := []string{"PATH=/usr/bin:/bin"}
	for _, e := range keys["Environment"] {
		env = append(env, strings.Trim(e, `"`))
	}
	for _, f := range keys["EnvironmentFile"] {
		b, err := os.ReadFile(strings.TrimPrefix(f, "-"))
		if err != nil && !strings.HasPrefix(f, "-") {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
				env = append(env, k+"="+strings.Trim(v, `"'`))
			}
		}
	}
	script := "exec " + keys["ExecStart"][0]
	args := []string{"--reuid", keys["User"][0], "--regid", keys["Group"][0], "--init-groups"}
	if len(caps) > 0 {
		args = append(args, "--inh-caps", strings.Join(caps, ","), "--ambient-caps", strings.Join(caps, ","))
	}
	if keys["NoNewPrivileges"][0] == "true" {
		args = append(args, "--no-new-privs")
	}
	cmd := exec.Command(setpriv, append(args, "--", "sh", "-c", script)...)
	cmd.Dir = keys["WorkingDirectory"][0]
	cmd.Env = env
	log := &exportertest.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	must(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s's log:\n%s", unit, log.String())
		}
	})
	return stop
}

func waitHealth(t *testing.T, port string) {
	t.Helper()
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// insideScratch names the binaries' directory when TestManualInstall runs
// inside its scratch root.
const insideScratch = "PACKAGING_TEST_SCRATCH_BIN"

// TestManualInstall follows docs/deployment.md's manual install, the block
// after its manual-install marker, as written (sudo is root here), in a
// scratch root: the test binary runs itself again in a mount namespace of
// its own where /etc, /opt and /var/log are overlays, so the user, the files
// and the units it makes vanish with it. There the user is checked, the
// capability setcap gave, systemd-analyze verify of the installed units,
// and ffmpeg-cpu-exporter started as systemd would, on a free port set in
// its environment file.
func TestManualInstall(t *testing.T) {
	if bin := os.Getenv(insideScratch); bin != "" {
		manualInstall(t, bin)
		return
	}
	peer.RequireRoot(t, "overlay mounts for the scratch root, and useradd")
	unshare := peer.Require(t, "unshare", "apt-get install -y util-linux")
	peer.Require(t, "setcap", "apt-get install -y libcap2-bin")
	if exec.Command("getent", "passwd", "ffmpeg-worker").Run() == nil {
		peer.Missing(t, "user ffmpeg-worker exists here already: the manual install's useradd would fail")
	}
	packages(t) // builds the binaries too
	scratch := t.TempDir()
	var mounts string
	for _, d := range []string{"/etc", "/opt", "/var/log"} {
		up, work := filepath.Join(scratch, d, "upper"), filepath.Join(scratch, d, "work")
		must(t, os.MkdirAll(up, 0o755))
		must(t, os.MkdirAll(work, 0o755))
		mounts += fmt.Sprintf("mount -t overlay overlay -o lowerdir=%[1]s,upperdir=%[2]s,workdir=%[3]s %[1]s && ", d, up, work)
	}
	self, err := os.Executable()
	must(t, err)
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--", "sh", "-c", mounts+`exec "$@"`, "sh",
		self, "-test.run", "^TestManualInstall$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), insideScratch+"="+filepath.Dir(built.dir))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestManualInstall") {
		t.Fatalf("the manual install in a scratch root: %v\n%s", err, out)
	}
	t.Logf("in the scratch root:\n%s", out)
	if exec.Command("getent", "passwd", "ffmpeg-worker").Run() == nil {
		t.Error("the scratch root's user ffmpeg-worker is on this machine after the test")
	}
}

func manualInstall(t *testing.T, bin string) {
	analyze := peer.Require(t, "systemd-analyze", "apt-get install -y systemd")
	setpriv := peer.Require(t, "setpriv", "apt-get install -y util-linux")
	if exec.Command("getent", "passwd", "ffmpeg-worker").Run() == nil {
		t.Fatal("user ffmpeg-worker exists before the manual install")
	}
	const marker = "<!-- test: manual-install -->\n```bash\n"
	_, block, ok := strings.Cut(readFile(t, filepath.Join(root, "docs", "deployment.md")), marker)
	if !ok {
		t.Fatalf("docs/deployment.md: no %q line before a bash block", marker)
	}
	block, _, _ = strings.Cut(block, "```")

	// A tree where make build has run: bin/ and examples/.
	tree := t.TempDir()
	must(t, os.Symlink(bin, filepath.Join(tree, "bin")))
	examples, err := filepath.Abs(filepath.Join(root, "examples"))
	must(t, err)
	must(t, os.Symlink(examples, filepath.Join(tree, "examples")))
	// sudo: this is root. systemctl: where systemd does not run this
	// machine there is nothing to reload; where it does, it reloads.
	prelude := "set -euo pipefail\nsudo() { \"$@\"; }\n" +
		"if [ ! -d /run/systemd/system ]; then systemctl() { echo \"no systemd running: skipped systemctl $*\"; }; fi\n"
	cmd := exec.Command("bash", "-c", prelude+block)
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the manual install:\n%s\n%v\n%s", block, err, out)
	}

	id, err := exec.Command("id", "ffmpeg-worker").Output()
	if err != nil || !strings.Contains(string(id), "(video)") {
		t.Errorf("id ffmpeg-worker: %s %v, want a user in video", id, err)
	}
	if out, _ := exec.Command("getcap", "/opt/ffmpeg-rtmp/worker/bin/cpu-exporter").Output(); !strings.Contains(string(out), "cap_dac_read_search=ep") {
		t.Errorf("getcap cpu-exporter: %q, want cap_dac_read_search=ep", out)
	}
	installed, _ := filepath.Glob("/etc/systemd/system/ffmpeg-*.service")
	if len(installed) != len(units) {
		t.Fatalf("%d units installed, want %d", len(installed), len(units))
	}
	if out, err := exec.Command(analyze, append([]string{"verify"}, installed...)...).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	port := exportertest.FreePort(t)
	must(t, os.WriteFile("/etc/default/ffmpeg-cpu-exporter", []byte("ARGS=\"--port="+port+"\"\n"), 0o644))
	stop := startUnit(t, setpriv, "/etc/systemd/system/ffmpeg-cpu-exporter.service", false)
	waitHealth(t, port)
	stop()
}
