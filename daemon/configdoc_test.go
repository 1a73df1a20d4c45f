package daemon

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestConfigurationDocListsEveryKey walks the Config struct's yaml tags and
// fails for any key docs/configuration.md does not list. The shared pool
// and tls sections are documented once as channels.<channel>.pool.KEY.
func TestConfigurationDocListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	shared := regexp.MustCompile(`^channels\.[a-z]+\.(pool|tls)\.`)
	keys := ConfigKeys()
	if len(keys) < 100 {
		t.Fatalf("ConfigKeys found %d keys; the walk is broken", len(keys))
	}
	for _, k := range keys {
		k = shared.ReplaceAllString(k, "channels.<channel>.$1.")
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("docs/configuration.md does not list `%s`", k)
		}
	}
}
