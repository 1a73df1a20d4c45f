package daemon

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestPrometheusRulesUseExportedMetrics reads deploy/prometheus-rules.yaml
// and scrapes a daemon that ran a campaign (on Redis, so the Redis series
// exist): every notifyd_ metric a rule names must be on /metrics, or the
// alert could never fire.
func TestPrometheusRulesUseExportedMetrics(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it): notifyd_redis_up needs a daemon on Redis")
	}
	raw, err := os.ReadFile("../deploy/prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("parse rules: %v", err)
	}
	named := map[string][]string{} // metric → alerts naming it
	metricRE := regexp.MustCompile(`\bnotifyd_[a-z0-9_]+`)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: a rule without alert name or expr", g.Name)
			}
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				named[m] = append(named[m], r.Alert)
			}
		}
	}
	if len(named) < 8 {
		t.Fatalf("the rules name %d notifyd metrics; parsing is broken? %v", len(named), named)
	}

	td := startDaemon(t, fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", url, redisPrefix(t, url)))
	if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(smsCampaign)); status != 201 {
		t.Fatalf("create campaign: %d %v", status, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := td.do(t, "GET", "/v1/campaigns/api-test", testToken, "", nil)
		if body["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("campaign never completed: %v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Series that come from the events hub's snapshot (campaign progress)
	// appear at its next tick: scrape until every named metric is there.
	var b []byte
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b = scrape(t, td)
		exported := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^# TYPE (notifyd_[a-z0-9_]+) (\w+)`).FindAllStringSubmatch(string(b), -1) {
			exported[m[1]] = true
			if m[2] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[m[1]+s] = true
				}
			}
		}
		missing = missing[:0]
		for m, alerts := range named {
			if !exported[m] {
				missing = append(missing, fmt.Sprintf("%s (used by %s)", m, strings.Join(alerts, ", ")))
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("deploy/prometheus-rules.yaml names metrics the daemon does not export:\n  %s", strings.Join(missing, "\n  "))
	}
	if !strings.Contains(string(b), `notifyd_redis_up 1`) || !strings.Contains(string(b), `notifyd_channel_queue_capacity{channel="sms"} 10000`) ||
		!strings.Contains(string(b), `notifyd_build_info{`) {
		t.Errorf("/metrics lacks notifyd_redis_up 1, the sms queue capacity or notifyd_build_info:\n%s", b)
	}
}

func scrape(t *testing.T, td *testDaemon) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", td.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
