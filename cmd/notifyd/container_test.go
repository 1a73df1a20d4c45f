package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// There is no container engine on the build machines: these tests check
// what can be checked without one — the compose files parse, reference
// files that exist, wire volumes, ports and health checks consistently,
// and the local stack's config (laid over a real sandbox's fragment) is
// one the daemon accepts; the Dockerfile's inputs survive .dockerignore.

type composeFile struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Build       string   `yaml:"build"`
		Command     []string `yaml:"command"`
		Volumes     []string `yaml:"volumes"`
		Ports       []string `yaml:"ports"`
		NetworkMode string   `yaml:"network_mode"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return c
}

// checkComposeFiles: every build context holds a Dockerfile, every bind
// mount's host file exists, every named volume is declared, every
// depends_on names a service.
func checkComposeFiles(t *testing.T, path string, c composeFile) {
	dir := filepath.Dir(path)
	for name, s := range c.Services {
		if s.Build != "" {
			if _, err := os.Stat(filepath.Join(dir, s.Build, "Dockerfile")); err != nil {
				t.Errorf("%s: service %s builds %s, which has no Dockerfile: %v", path, name, s.Build, err)
			}
		} else if s.Image == "" {
			t.Errorf("%s: service %s has neither build nor image", path, name)
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: service %s mounts %s, which does not exist: %v", path, name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s: service %s mounts volume %s, which is not declared", path, name, src)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s: service %s depends on unknown service %s", path, name, dep)
			}
		}
	}
}

// mount returns the mount of volume or host path src in a service's
// volumes: its target and whether it is read-only.
func mount(vols []string, src string) (target string, ro, ok bool) {
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if parts[0] == src && len(parts) >= 2 {
			return parts[1], len(parts) == 3 && parts[2] == "ro", true
		}
	}
	return "", false, false
}

func flagValue(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// TestComposeLocalStack checks docker-compose.yml, the local stack: the
// sandbox writes the shard volume, notifyd reads it read-only in the
// sandbox's network namespace, and the config notifyd is started with —
// deploy/notifyd.local.yaml laid over the fragment a real sandbox writes —
// loads and builds every channel.
func TestComposeLocalStack(t *testing.T) {
	const path = "../../docker-compose.yml"
	c := readCompose(t, path)
	checkComposeFiles(t, path, c)
	sb, nd := c.Services["sandbox"], c.Services["notifyd"]
	if len(sb.Command) == 0 || sb.Command[0] != "sandbox" || len(nd.Command) == 0 || nd.Command[0] != "serve" {
		t.Fatalf("want a sandbox service running `sandbox` and a notifyd service running `serve`: %+v", c.Services)
	}
	// The shard volume: writable by the sandbox (the store's stand-in),
	// read-only for notifyd, mounted at the same path so the fragment's
	// file paths hold in both.
	sbDir, sbRO, ok1 := mount(sb.Volumes, "shard")
	ndDir, ndRO, ok2 := mount(nd.Volumes, "shard")
	if !ok1 || !ok2 || sbRO || !ndRO || sbDir != ndDir || flagValue(sb.Command, "--dir") != sbDir {
		t.Errorf("shard volume: sandbox %q (ro %v), notifyd %q (ro %v), sandbox --dir %q: want the same path, rw for the sandbox, ro for notifyd",
			sbDir, sbRO, ndDir, ndRO, flagValue(sb.Command, "--dir"))
	}
	if nd.NetworkMode != "service:sandbox" {
		t.Errorf("notifyd network_mode %q: want service:sandbox (the fragment's endpoints are the sandbox's loopback)", nd.NetworkMode)
	}
	// The sandbox's health check asks its control endpoint, at --port-base
	// plus the control's place in sandboxFakes.
	base, err := strconv.Atoi(flagValue(sb.Command, "--port-base"))
	if err != nil {
		t.Fatalf("sandbox --port-base: %v", err)
	}
	control := base + slices.Index(sandboxFakes, "control")
	hc := sb.Healthcheck.Test
	if len(hc) < 2 || hc[1] != "/usr/local/bin/notifyd" || flagValue(hc, "--addr") != "http://127.0.0.1:"+strconv.Itoa(control) {
		t.Errorf("sandbox health check %q: want notifyd health --addr http://127.0.0.1:%d", hc, control)
	}
	if nd.DependsOn["sandbox"].Condition != "service_healthy" {
		t.Errorf("notifyd must wait for the sandbox to be healthy (its fragment written)")
	}

	// notifyd's configs: the fragment from the volume, then files mounted
	// from the repository. Map container paths to what a real sandbox (in
	// a temporary directory) and the repository hold.
	dir := t.TempDir()
	s, err := startSandbox(sandboxOptions{Dir: dir, Ports: map[string]int{}, Profiles: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hostPaths := map[string]string{} // container path → host path
	for _, v := range nd.Volumes {
		parts := strings.Split(v, ":")
		if strings.HasPrefix(parts[0], ".") {
			hostPaths[parts[1]] = filepath.Join(filepath.Dir(path), parts[0])
		}
	}
	var configs []string
	for i, a := range nd.Command {
		if a != "--config" || i+1 >= len(nd.Command) {
			continue
		}
		p := nd.Command[i+1]
		switch {
		case strings.HasPrefix(p, ndDir+"/"):
			configs = append(configs, filepath.Join(dir, strings.TrimPrefix(p, ndDir+"/")))
		case hostPaths[p] != "":
			raw, err := os.ReadFile(hostPaths[p])
			if err != nil {
				t.Fatal(err)
			}
			text := string(raw)
			for cp, hp := range hostPaths {
				text = strings.ReplaceAll(text, cp, hp)
			}
			local := filepath.Join(t.TempDir(), filepath.Base(p))
			if err := os.WriteFile(local, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			configs = append(configs, local)
		default:
			t.Fatalf("notifyd --config %s is neither in the shard volume nor mounted from the repository", p)
		}
	}
	if len(configs) != 2 || filepath.Base(configs[0]) != sandboxFragment {
		t.Fatalf("notifyd configs %q: want the sandbox fragment, then the stack's file", configs)
	}
	cfg, chans, err := loadDaemon(configs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("the local stack's config does not load: %v", err)
	}
	closeChannels(chans)
	if len(chans) != 6 || !cfg.Redis.Enabled() || cfg.Admin.Listen != "0.0.0.0:8080" || !strings.HasPrefix(cfg.Shard.Path, dir) {
		t.Errorf("local stack config: %d channels, redis %v, admin %s, shard %s", len(chans), cfg.Redis.Enabled(), cfg.Admin.Listen, cfg.Shard.Path)
	}
	if !slices.Contains(sb.Ports, "127.0.0.1:8080:8080") {
		t.Errorf("the sandbox service (notifyd's network namespace) must publish the admin API on 127.0.0.1:8080: %q", sb.Ports)
	}
}

func TestComposeProduction(t *testing.T) {
	const path = "../../deploy/compose.production.yaml"
	c := readCompose(t, path)
	checkComposeFiles(t, path, c)
	if _, ro, ok := mount(c.Services["notifyd"].Volumes, "shard"); !ok || !ro {
		t.Errorf("notifyd must mount the shard volume read-only")
	}
	if _, ro, ok := mount(c.Services["store"].Volumes, "shard"); !ok || ro {
		t.Errorf("the store must mount the shard volume writable")
	}
}

// TestDockerBuildContext: every file the Dockerfile copies from the
// context exists, and .dockerignore keeps the sources, go.mod/go.sum and
// .git (the build stamps the commit from it).
func TestDockerBuildContext(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY\s+([^-\n][^\n]*)$`).FindAllStringSubmatch(string(raw), -1) {
		fields := strings.Fields(m[1])
		for _, src := range fields[:len(fields)-1] {
			if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
				t.Errorf("Dockerfile copies %s, which does not exist: %v", src, err)
			}
		}
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(ignore), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	ignored := func(rel string) bool {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, rel); ok {
				return true
			}
			if rest, found := strings.CutPrefix(p, "**/"); found {
				for _, part := range strings.Split(rel, "/") {
					if ok, _ := filepath.Match(rest, part); ok {
						return true
					}
				}
			}
		}
		return false
	}
	must := []string{"go.mod", "go.sum", "notifyd.example.yaml", ".git", "cmd/notifyd/main.go"}
	err = filepath.WalkDir("../..", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("../..", p)
		if strings.HasSuffix(rel, ".go") && !strings.HasPrefix(rel, ".git/") {
			must = append(must, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range must {
		if ignored(f) {
			t.Errorf(".dockerignore leaves out %s, which the image build needs", f)
		}
	}
}
