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
		"/v1/campaigns":                {"get", "post"},
		"/v1/campaigns/{id}":           {"get"},
		"/v1/campaigns/{id}/{action}":  {"post"},
		"/v1/campaigns/{id}/test-send": {"post"},
		"/v1/events":                   {"get"},
		"/v1/messages":                 {"get"},
		"/v1/flows":                    {"get", "post"},
		"/v1/flows/{id}":               {"get", "delete"},
		"/v1/flows/{id}/{action}":      {"post"},
		"/v1/triggers":                 {"post"},
		"/healthz":                     {"get"},
		"/readyz":                      {"get"},
		"/metrics":                     {"get"},
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

// TestOpenAPIDocumentsStatuses is issue 12 item 19: every status an
// operation can answer is in docs/api.yaml (413/415 from the body reader,
// 503 from fail() when the state store is away, 429 from a full queue).
func TestOpenAPIDocumentsStatuses(t *testing.T) {
	b, err := os.ReadFile("../docs/api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]any `yaml:"responses"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		statuses     []string
	}{
		{"post", "/v1/campaigns", []string{"400", "401", "409", "413", "415", "503"}},
		{"get", "/v1/campaigns", []string{"400", "401", "503"}},
		{"get", "/v1/campaigns/{id}", []string{"401", "404", "503"}},
		{"post", "/v1/campaigns/{id}/{action}", []string{"401", "404", "409", "503"}},
		{"post", "/v1/campaigns/{id}/test-send", []string{"400", "401", "404", "503"}},
		{"post", "/v1/flows", []string{"400", "401", "409", "413", "415", "503"}},
		{"get", "/v1/flows/{id}", []string{"401", "404", "503"}},
		{"delete", "/v1/flows/{id}", []string{"401", "404", "503"}},
		{"post", "/v1/flows/{id}/{action}", []string{"401", "404", "409", "503"}},
		{"post", "/v1/triggers", []string{"400", "401", "413", "415", "429", "503"}},
		{"get", "/v1/events", []string{"401", "404", "503"}},
		{"get", "/readyz", []string{"503"}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			op, ok := doc.Paths[tc.path][tc.method]
			if !ok {
				t.Fatalf("%s %s is not documented", tc.method, tc.path)
			}
			for _, s := range tc.statuses {
				if _, ok := op.Responses[s]; !ok {
					t.Errorf("%s %s answers %s, undocumented", tc.method, tc.path, s)
				}
			}
		})
	}
}
