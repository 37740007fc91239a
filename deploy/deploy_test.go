// Package deploy holds the compose files that run mlserve's images; its
// tests check those files and the three Dockerfiles at the repository
// root, since no Docker engine runs where the tests run: the properties
// the images must have (multi-stage, pinned bases, non-root, healthcheck
// on /ping, Immich's port and cache volume, sha256-checked ONNX Runtime),
// the healthcheck command itself against live HTTP servers, and the Debian
// packages of the Debian-based stages against this machine's package lists.
package deploy

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd, Args string
	Line      int
}

// stage is a FROM and what follows it.
type stage struct {
	Image, Name string
	Ins         []instruction
}

func parseDockerfile(t *testing.T, name string) []stage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), name))
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{Image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				t.Fatalf("%s:%d: %s before FROM", name, in.Line, in.Cmd)
			}
			continue
		}
		stages[len(stages)-1].Ins = append(stages[len(stages)-1].Ins, in)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Ins {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

var dockerfiles = []string{"Dockerfile", "Dockerfile.cuda", "Dockerfile.openvino"}

// pinnedTag: an explicit version (a digit in the tag), never "latest".
var pinnedTag = regexp.MustCompile(`^[a-z0-9./_-]+:[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$`)

func TestDockerfiles(t *testing.T) {
	for _, name := range dockerfiles {
		t.Run(name, func(t *testing.T) {
			stages := parseDockerfile(t, name)
			if len(stages) < 2 {
				t.Fatalf("%d stages; the images are multi-stage (build, runtime)", len(stages))
			}
			names := map[string]bool{}
			for _, s := range stages {
				if !pinnedTag.MatchString(s.Image) || strings.HasSuffix(s.Image, ":latest") {
					t.Errorf("base image %q is not pinned to a version", s.Image)
				}
				for _, in := range s.all("COPY") {
					if from, ok := strings.CutPrefix(in.Args, "--from="); ok {
						ref, _, _ := strings.Cut(from, " ")
						if !names[ref] && !strings.Contains(ref, ":") {
							t.Errorf("line %d: COPY --from=%s names no earlier stage", in.Line, ref)
						}
					}
				}
				for _, in := range s.all("RUN") {
					if strings.Contains(in.Args, "apt-get install") {
						if !strings.Contains(in.Args, "--no-install-recommends") {
							t.Errorf("line %d: apt-get install without --no-install-recommends", in.Line)
						}
						if !strings.Contains(in.Args, "rm -rf /var/lib/apt/lists/*") {
							t.Errorf("line %d: apt lists left in the layer", in.Line)
						}
					}
				}
				for _, in := range s.all("ADD") {
					if strings.Contains(in.Args, "://") {
						t.Errorf("line %d: ADD of a URL (unchecked download)", in.Line)
					}
				}
				if s.Name != "" {
					names[s.Name] = true
				}
			}

			// The build: the slim binary, checked, and a pinned ONNX Runtime.
			var build strings.Builder
			for _, s := range stages[:len(stages)-1] {
				for _, in := range s.all("RUN") {
					build.WriteString(in.Args + "\n")
				}
			}
			for _, want := range []string{"go build", "scripts/check-libs.sh /out/mlserve"} {
				if !strings.Contains(build.String(), want) {
					t.Errorf("the build stage does not run %q", want)
				}
			}
			if !strings.Contains(build.String(), "scripts/setup.sh --no-apt --runtime") &&
				(!strings.Contains(build.String(), "sha256sum") || !strings.Contains(build.String(), "==${ORT_OPENVINO_VERSION}")) {
				t.Error("ONNX Runtime is not fetched by scripts/setup.sh (sha256 pins) nor checked by sha256")
			}
			if strings.Contains(build.String(), "libopencv-dev") {
				t.Error("libopencv-dev brings every OpenCV module; only core and imgproc are linked")
			}

			// The runtime stage.
			rt := stages[len(stages)-1]
			users := rt.all("USER")
			if len(users) == 0 {
				t.Error("the runtime stage runs as root (no USER)")
			} else if u := users[len(users)-1].Args; u == "root" || u == "0" || strings.HasPrefix(u, "0:") {
				t.Errorf("USER %s", u)
			}
			hc := rt.all("HEALTHCHECK")
			if len(hc) != 1 || !strings.Contains(hc[0].Args, "/ping") {
				t.Errorf("HEALTHCHECK on /ping: %v", hc)
			}
			env := ""
			for _, in := range rt.all("ENV") {
				env += in.Args + " "
			}
			for _, want := range []string{"MACHINE_LEARNING_CACHE_FOLDER=/cache", "IMMICH_PORT=3003", "IMMICH_HOST=0.0.0.0", "MLSERVE_ORT_LIBRARY=/usr/local/lib/mlserve/"} {
				if !strings.Contains(env, want) {
					t.Errorf("ENV lacks %s", want)
				}
			}
			if v := rt.all("VOLUME"); len(v) != 1 || v[0].Args != "/cache" {
				t.Errorf("VOLUME /cache: %v", v)
			}
			if e := rt.all("EXPOSE"); len(e) != 1 || e[0].Args != "3003" {
				t.Errorf("EXPOSE 3003: %v", e)
			}
			if e := rt.all("ENTRYPOINT"); len(e) != 1 || !strings.Contains(e[0].Args, "tini") {
				t.Errorf("ENTRYPOINT tini: %v", e)
			}
			if c := rt.all("CMD"); len(c) != 1 || c[0].Args != `["mlserve", "serve"]` {
				t.Errorf("CMD: %v", c)
			}
			var runtimeRun strings.Builder
			for _, in := range rt.all("RUN") {
				runtimeRun.WriteString(in.Args)
			}
			if !strings.Contains(runtimeRun.String(), "chown mlserve:mlserve /cache") {
				t.Error("the cache folder is not the unprivileged user's")
			}
		})
	}
}

// healthcheck returns the HEALTHCHECK command's argv of a Dockerfile.
func healthcheck(t *testing.T, name string) []string {
	stages := parseDockerfile(t, name)
	hc := stages[len(stages)-1].all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("%s: %d HEALTHCHECKs", name, len(hc))
	}
	_, exec, ok := strings.Cut(hc[0].Args, "CMD ")
	if !ok {
		t.Fatalf("%s: HEALTHCHECK without CMD", name)
	}
	var argv []string
	if err := json.Unmarshal([]byte(exec), &argv); err != nil {
		t.Fatalf("%s: HEALTHCHECK CMD is not an exec-form JSON array: %v", name, err)
	}
	return argv
}

// TestHealthcheck runs each image's healthcheck command (bash and
// /dev/tcp: the images have no curl) against live servers: a healthy
// /ping, an unhealthy one, a closed port and a server that never answers.
func TestHealthcheck(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		testenv.Missing(t, "bash: %v", err)
	}
	pong := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ping" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("pong"))
	}))
	defer pong.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	mute, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	port := func(u string) int {
		_, p, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
		n, _ := strconv.Atoi(p)
		return n
	}
	seen := map[string]bool{}
	for _, name := range dockerfiles {
		argv := healthcheck(t, name)
		if key := strings.Join(argv, "\x00"); seen[key] {
			continue // the same command as an image already tested
		} else {
			seen[key] = true
		}
		for _, c := range []struct {
			what    string
			port    int
			healthy bool
		}{
			{"/ping answers 200", port(pong.URL), true},
			{"503", port(sick.URL), false},
			{"closed port", closedPort, false},
			{"no answer", mute.Addr().(*net.TCPAddr).Port, false},
		} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "IMMICH_PORT="+strconv.Itoa(c.port))
			start := time.Now()
			err := cmd.Run()
			if (err == nil) != c.healthy {
				t.Errorf("%s, %s: healthy=%v (%v)", name, c.what, err == nil, err)
			}
			if d := time.Since(start); d > 4500*time.Millisecond {
				t.Errorf("%s, %s: took %v, over the 5 s HEALTHCHECK timeout", name, c.what, d)
			}
		}
	}
}

// aptStages are the Debian 12 stages whose packages can be resolved here.
var debian12 = regexp.MustCompile(`^(debian:12|golang:[0-9.]+-bookworm)`)

// TestDockerfileAptPackages resolves the apt-get install lists of the
// Debian 12 stages with `apt-get install --dry-run` on this machine
// (Debian 12 too). Ubuntu 24.04 stages (Dockerfile.cuda) cannot be checked
// here. nodejs and npm are left out: NodeSource's nodejs on the
// development machines conflicts with Debian's npm, which a clean image
// does not have.
func TestDockerfileAptPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs apt-get")
	}
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil || !strings.Contains(string(osr), `VERSION_ID="12"`) {
		t.Skip("not Debian 12: the packages of Debian 12 images cannot be resolved here")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		testenv.Missing(t, "apt-get: %v", err)
	}
	if lists, _ := filepath.Glob("/var/lib/apt/lists/*_Packages*"); len(lists) == 0 {
		testenv.Missing(t, "no apt package lists (run apt-get update)")
	}
	install := regexp.MustCompile(`apt-get install ([^&|;]*)`)
	type list struct {
		where string
		pkgs  []string
	}
	var lists []list
	var all []string
	for _, name := range dockerfiles {
		for _, s := range parseDockerfile(t, name) {
			if !debian12.MatchString(s.Image) {
				continue
			}
			for _, in := range s.all("RUN") {
				for _, m := range install.FindAllStringSubmatch(in.Args, -1) {
					l := list{where: name + ":" + strconv.Itoa(in.Line) + " (" + s.Image + ")"}
					for _, f := range strings.Fields(m[1]) {
						if !strings.HasPrefix(f, "-") && f != "nodejs" && f != "npm" {
							l.pkgs = append(l.pkgs, f)
						}
					}
					lists = append(lists, l)
					all = append(all, l.pkgs...)
				}
			}
		}
	}
	if len(lists) < 4 {
		t.Fatalf("only %d apt-get install lists in Debian 12 stages", len(lists))
	}
	dryRun := func(pkgs []string) ([]byte, error) {
		return exec.Command("apt-get", append([]string{"install", "--dry-run", "-qq", "--no-install-recommends"}, pkgs...)...).CombinedOutput()
	}
	// One resolution of everything (apt-get is slow to start); list by
	// list only to say which one fails.
	if _, err := dryRun(all); err == nil {
		return
	}
	for _, l := range lists {
		if out, err := dryRun(l.pkgs); err != nil {
			t.Errorf("%s: apt-get cannot install %v: %v\n%s", l.where, l.pkgs, err, out)
		}
	}
}

func TestComposeFiles(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, c := range []struct {
		file string
		want []string
	}{
		{"docker-compose.yml", []string{
			"\n  immich-machine-learning:\n", "container_name: immich_machine_learning", "- model-cache:/cache",
			"\nvolumes:\n  model-cache:\n", "image: ${MLSERVE_IMAGE:-mlserve:cpu}", "chown\", \"-R\", \"10001:10001\", \"/cache\"",
			"condition: service_completed_successfully",
		}},
		{"docker-compose.gpu.yml", []string{
			"\n  immich-machine-learning:\n", "- model-cache:/cache", "\nvolumes:\n  model-cache:\n",
			"image: ${MLSERVE_IMAGE:-mlserve:cuda}", "driver: nvidia", "capabilities: [gpu]",
			`- "${MLSERVE_BIND:-127.0.0.1}:3003:3003"`, "MLSERVE_PROVIDERS: ${MLSERVE_PROVIDERS:-CUDA}",
		}},
	} {
		s := read(c.file)
		for _, w := range c.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s lacks %q", c.file, w)
			}
		}
		// Port 3003 is never published on every interface.
		for _, l := range strings.Split(s, "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "- \"3003") || strings.HasPrefix(l, "- 3003") || strings.Contains(l, "0.0.0.0:3003") {
				t.Errorf("%s publishes 3003 on all interfaces: %s", c.file, l)
			}
		}
		if strings.Contains(s, "\t") {
			t.Errorf("%s has tabs (YAML)", c.file)
		}
	}
	if _, err := os.Stat(filepath.Join(testenv.Root(), "docs", "remote-gpu.md")); err != nil {
		t.Error(err)
	}
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.Root(), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", ".deps", ".env", "bin", ".gpucheck", "**/node_modules"} {
		if !lines[want] {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, keep := range []string{"third_party", "scripts", "*.go", "go.sum"} {
		if lines[keep] {
			t.Errorf(".dockerignore excludes %s, which the build needs", keep)
		}
	}
}
