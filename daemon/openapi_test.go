package daemon

import (
	"os"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIDocumentsEveryRoute keeps docs/api.yaml in step with the routes
// NewAPI serves.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../docs/api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/api.yaml is not valid YAML: %v", err)
	}
	routes := map[string][]string{
		"/v1/campaigns":               {"get", "post"},
		"/v1/campaigns/{id}":          {"get"},
		"/v1/campaigns/{id}/{action}": {"post"},
		"/v1/events":                  {"get"},
		"/v1/flows":                   {"get", "post"},
		"/v1/flows/{id}":              {"get", "delete"},
		"/v1/flows/{id}/{action}":     {"post"},
		"/v1/triggers":                {"post"},
		"/healthz":                    {"get"},
		"/readyz":                     {"get"},
		"/metrics":                    {"get"},
	}
	for path, methods := range routes {
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("%s is served but not documented", path)
			continue
		}
		for _, m := range methods {
			if _, ok := ops[m]; !ok {
				t.Errorf("%s %s is served but not documented", m, path)
			}
		}
	}
	for path := range doc.Paths {
		if _, ok := routes[path]; !ok {
			t.Errorf("%s is documented but not served", path)
		}
	}
	params := doc.Paths["/v1/campaigns/{id}/{action}"]["post"].(map[string]any)["parameters"].([]any)
	var actions []string
	for _, p := range params {
		pm, _ := p.(map[string]any)
		if pm["name"] == "action" {
			for _, a := range pm["schema"].(map[string]any)["enum"].([]any) {
				actions = append(actions, a.(string))
			}
		}
	}
	slices.Sort(actions)
	if want := []string{"cancel", "pause", "resume", "retry-failed"}; !slices.Equal(actions, want) {
		t.Errorf("documented actions %v, served %v", actions, want)
	}
}
