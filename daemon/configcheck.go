package daemon

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ConfigError is one problem in a config file, located by file, line and
// YAML key path (never by Go type).
type ConfigError struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d:", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ":")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every problem found in a config, in file and line order.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	noun := "problems"
	if len(es) == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("invalid config (%d %s):\n  %s", len(es), noun, strings.Join(lines, "\n  "))
}

// Unwrap lets errors.As find each ConfigError.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

var (
	secretType   = reflect.TypeFor[Secret]()
	durationType = reflect.TypeFor[Duration]()
)

// configChecker walks a YAML tree beside the Config type before anything is
// decoded, so that every unknown key, mistyped value, unset environment
// variable and unreadable secret file is reported at once, each with its
// line and key path. The decoder alone stops at the first secret and names
// Go types.
type configChecker struct {
	file  string
	errs  ConfigErrors
	lines map[string]int // key path → line, for locating semantic errors
}

func (c *configChecker) add(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	c.errs = append(c.errs, &ConfigError{File: c.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *configChecker) check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.DocumentNode {
		for _, x := range n.Content {
			c.check(x, t, path)
		}
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty section or value: the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case secretType:
		c.checkSecret(n, path)
		return
	case durationType:
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, "want a duration such as 30s or 5m")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			c.add(n, path, "parse duration %q: want e.g. 30s or 5m", n.Value)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "want a mapping of keys (see docs/configuration.md)")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				c.add(k, p, "unknown key %s%s (see docs/configuration.md)", k.Value, suggest(k.Value, fields))
				continue
			}
			c.lines[p] = k.Line
			c.check(v, f.Type, p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.add(n, path, "want a list")
			return
		}
		for i, x := range n.Content {
			c.check(x, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "want a mapping")
		}
	default:
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, "want %s", kindName(t))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			c.add(n, path, "%q is not %s", n.Value, kindName(t))
		}
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a string"
}

// checkSecret resolves nothing it does not have to: it reports an unset
// variable or an unreadable file, never the value.
func (c *configChecker) checkSecret(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		return
	case yaml.MappingNode:
	default:
		c.add(n, path, "a secret is a string or {env: NAME} / {file: PATH}")
		return
	}
	var ref secretRef
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "env":
			ref.Env = v.Value
		case "file":
			ref.File = v.Value
		case "optional":
			if err := v.Decode(&ref.Optional); err != nil {
				c.add(v, path+".optional", "%q is not true or false", v.Value)
			}
		default:
			c.add(k, path+"."+k.Value, "unknown key: a secret takes env, file and optional")
		}
	}
	if _, _, err := ref.resolve(); err != nil {
		c.add(n, path, "%v", err)
	}
}

// secretRef is the mapping form of a Secret.
type secretRef struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
	// Optional makes an unset variable or a missing file an unset secret
	// (e.g. redis.url: leave NOTIFYD_REDIS_URL unset to keep state in memory).
	Optional bool `yaml:"optional"`
}

// resolve returns the secret's value and where it came from.
func (r secretRef) resolve() (value, source string, err error) {
	switch {
	case r.Env != "" && r.File != "":
		return "", "", errors.New("a secret takes env or file, not both")
	case r.Env != "":
		v, ok := os.LookupEnv(r.Env)
		if !ok {
			if r.Optional {
				return "", "", nil
			}
			return "", "", fmt.Errorf("environment variable %s is not set", r.Env)
		}
		return v, "env " + r.Env, nil
	case r.File != "":
		b, err := os.ReadFile(r.File)
		if err != nil {
			if r.Optional && errors.Is(err, os.ErrNotExist) {
				return "", "", nil
			}
			return "", "", fmt.Errorf("read secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), "file " + r.File, nil
	}
	return "", "", errors.New("a secret needs env: NAME or file: PATH")
}

// yamlFields maps a struct's YAML keys to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

// ConfigKeys lists every key path of the config (lists as path[]), for the
// reference documentation and its test.
func ConfigKeys() []string {
	var out []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == secretType || t == durationType || t.Kind() != reflect.Struct {
			return
		}
		for name, f := range yamlFields(t) {
			p := join(path, name)
			out = append(out, p)
			walk(f.Type, p)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	sort.Strings(out)
	return out
}

// sortByLine orders one file's problems by line.
func sortByLine(es ConfigErrors) {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

// suggest names the closest known key when a typo is likely.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(key, name); d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
