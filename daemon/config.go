package daemon

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/templates"
)

// Config is notifyd.yaml. Every field has a default that runs; see
// notifyd.example.yaml for a documented example.
type Config struct {
	Shard    ShardConfig    `yaml:"shard"`
	Redis    RedisConfig    `yaml:"redis"`
	Admin    AdminConfig    `yaml:"admin"`
	Engine   EngineConfig   `yaml:"engine"`
	Flows    FlowsConfig    `yaml:"flows"`
	Channels ChannelsConfig `yaml:"channels"`
	// Templates sets the ceilings of every campaign's and flow's template
	// limits.
	Templates TemplatesConfig `yaml:"templates"`
	// DeliveryLog is the per-message delivery log and its Parquet export.
	DeliveryLog DeliveryLogConfig `yaml:"delivery_log"`
	// Policies are engagement rules over every campaign and flow (docs/policies.md).
	Policies PoliciesConfig `yaml:"policies"`
	// Tracking is the public endpoint of delivery and engagement events.
	Tracking TrackingConfig `yaml:"tracking"`
	// Runtime tunes the Go runtime's collector (serve only).
	Runtime RuntimeConfig `yaml:"runtime"`
}

// PoliciesConfig holds the daemon-wide engagement rules.
type PoliciesConfig struct {
	// FrequencyCaps: at most limit messages per user per sliding window, on
	// one channel or "all"; a campaign or flow may replace them
	// (frequency_cap.rules) or be exempt (frequency_cap.exempt).
	FrequencyCaps []CapRuleConfig `yaml:"frequency_caps"`
}

// CapRuleConfig is one frequency cap rule.
type CapRuleConfig struct {
	Channel string   `yaml:"channel"`
	Limit   int      `yaml:"limit"`
	Window  Duration `yaml:"window"`
}

// CapRules returns the rules as the campaign engine reads them.
func (p PoliciesConfig) CapRules() []campaigns.CapRule {
	var out []campaigns.CapRule
	for _, r := range p.FrequencyCaps {
		out = append(out, campaigns.CapRule{Channel: r.Channel, Limit: r.Limit, Window: campaigns.Duration(r.Window)})
	}
	return out
}

// TemplatesConfig is the daemon's say over templates.
type TemplatesConfig struct {
	// Limits are ceilings: a campaign's content.limits may lower them, never
	// raise them; unset fields are the templates package's defaults, and
	// each is at most its hard limit (templates.HardLimits).
	Limits TemplateLimits `yaml:"limits"`
}

// TemplateLimits mirrors templates.Limits with YAML names.
type TemplateLimits struct {
	MaxFieldBytes  int `yaml:"max_field_bytes"`
	MaxHTMLBytes   int `yaml:"max_html_bytes"`
	MaxSteps       int `yaml:"max_steps"`
	MaxSourceBytes int `yaml:"max_source_bytes"`
}

// Ceilings returns the limits as the templates package reads them.
func (l TemplateLimits) Ceilings() templates.Limits {
	return templates.Limits{MaxFieldBytes: l.MaxFieldBytes, MaxHTMLBytes: l.MaxHTMLBytes, MaxSteps: l.MaxSteps, MaxSourceBytes: l.MaxSourceBytes}
}

// ShardConfig says where the co-located store publishes its shard file.
type ShardConfig struct {
	Path string `yaml:"path"`
	// PollInterval is how often the published path is checked for a new generation (default 2s).
	PollInterval Duration `yaml:"poll_interval"`
	// Retained are this host's shard files of earlier rings, kept through a
	// reshard: campaigns pinned to such a ring keep running here over its
	// members. Remove an entry once no running campaign is pinned to its ring.
	Retained []string `yaml:"retained"`
	// LazyVerify leaves each block's verification to its first use instead
	// of warming every generation ahead of it (shard.Store's WithWarmUp): a
	// faster start on a host short of CPU, at the price of slow triggers
	// until the blocks they touch are verified.
	LazyVerify bool `yaml:"lazy_verify"`
}

// RedisConfig enables shared, restart-safe state: one node (URL) or a Redis
// Cluster (ClusterAddrs), never both. Without either, state is kept in
// memory (single process: demo, tests).
type RedisConfig struct {
	URL Secret `yaml:"url"`
	// ClusterAddrs are seed nodes (host:port) of a Redis Cluster; the client
	// discovers the rest and follows MOVED/ASK. Readiness pings every
	// master.
	ClusterAddrs []string `yaml:"cluster_addrs"`
	// Username and Password authenticate to the cluster's nodes (a URL
	// carries its own).
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// TLS connects to the cluster's nodes over TLS (a URL says rediss://).
	TLS bool `yaml:"tls"`
	// Prefix of every key (default "notifyd:").
	Prefix string `yaml:"prefix"`
	// FeedbackMaxLen trims the dead-address feedback stream <prefix>feedback
	// to about this many entries (default 1,000,000).
	FeedbackMaxLen int64 `yaml:"feedback_max_len"`
	// CapGroupBits is how many top bits of a user key name the group whose
	// users share a frequency-cap hash field (0: redisstate's default, 16);
	// every daemon sharing the state must agree (docs/redis-keys.md).
	CapGroupBits int `yaml:"cap_group_bits"`
}

// AdminConfig is the admin API.
type AdminConfig struct {
	// Listen is the address of the admin API (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// Token is the bearer token; required.
	Token Secret `yaml:"token"`
	// PublicMetrics serves /metrics without the token.
	PublicMetrics bool `yaml:"public_metrics"`
	// TLS serves the admin API over TLS; ClientCA also requires a client
	// certificate signed by it (mutual TLS), on top of the token.
	TLS *AdminTLSConfig `yaml:"tls"`
}

// AdminTLSConfig is the admin API's own TLS: PEM contents, usually {file: ...}.
type AdminTLSConfig struct {
	Cert     Secret `yaml:"cert"`
	Key      Secret `yaml:"key"`
	ClientCA Secret `yaml:"client_ca"`
}

// serverConfig builds the TLS config, or says what is wrong with it.
func (c *AdminTLSConfig) serverConfig() (*tls.Config, error) {
	if !c.Cert.Set() || !c.Key.Set() {
		return nil, errors.New("cert and key are both required")
	}
	pair, err := tls.X509KeyPair([]byte(c.Cert.Value()), []byte(c.Key.Value()))
	if err != nil {
		// The key's bytes never reach the message: X509KeyPair does not echo them.
		return nil, fmt.Errorf("load certificate and key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if c.ClientCA.Set() {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.ClientCA.Value())) {
			return nil, errors.New("client_ca holds no PEM certificate")
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// EngineConfig tunes the campaign engine.
type EngineConfig struct {
	Owner          string   `yaml:"owner"`
	BatchSize      int      `yaml:"batch_size"`
	MaxOpenBatches int      `yaml:"max_open_batches"`
	LeaseTTL       Duration `yaml:"lease_ttl"`
	DrainTimeout   Duration `yaml:"drain_timeout"`
	// LedgerFlushInterval is the longest a delivery-ledger change waits to
	// be written when no worker waits for it (default 2ms).
	LedgerFlushInterval Duration `yaml:"ledger_flush_interval"`
	// CrashLoopLimit quarantines a campaign after this many daemon deaths
	// in a row while running it (default 3; -1 disables).
	CrashLoopLimit int `yaml:"crash_loop_limit"`
	// ShutdownTimeout bounds the SIGTERM drain (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// FlowsConfig tunes trigger processing (zero: defaults).
type FlowsConfig struct {
	Workers   int `yaml:"workers"`
	QueueSize int `yaml:"queue_size"`
	MaxBatch  int `yaml:"max_batch"`
}

// PoolConfig is a channel's worker pool: concurrency, queue and limits.
type PoolConfig struct {
	Workers     int `yaml:"workers"`
	BatchSize   int `yaml:"batch_size"`
	QueueSize   int `yaml:"queue_size"`
	MaxAttempts int `yaml:"max_attempts"`
	// RatePerSecond is the provider account's limit (0: unlimited); Burst its bucket.
	RatePerSecond float64  `yaml:"rate_per_second"`
	Burst         int      `yaml:"burst"`
	BackoffBase   Duration `yaml:"backoff_base"`
	BackoffMax    Duration `yaml:"backoff_max"`
	SendTimeout   Duration `yaml:"send_timeout"`
}

// TLSConfig is the trust configuration of one provider endpoint.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Duration reads "30s", "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		// A type error lets the decoder carry on and report the rest.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: parse duration %q: want e.g. 30s or 5m", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// Secret is a credential read from the environment ({env: NAME}), a file
// ({file: PATH}) or, discouraged, inline. It never prints its value.
type Secret struct {
	value  string
	source string
}

// UnmarshalYAML reads a secret reference and resolves it at once, so a
// missing variable or file fails at start-up, naming where it came from.
// Its errors are type errors, so the decoder carries on and reports every
// other problem too.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	fail := func(format string, args ...any) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
	}
	switch n.Kind {
	case yaml.ScalarNode:
		s.value, s.source = n.Value, fmt.Sprintf("inline value at line %d", n.Line)
		return nil
	case yaml.MappingNode:
		var ref secretRef
		if err := n.Decode(&ref); err != nil {
			return fail("a secret takes env, file and optional")
		}
		v, src, err := ref.resolve()
		if err != nil {
			return fail("%v", err)
		}
		s.value, s.source = v, src
		return nil
	}
	return fail("a secret is a string or {env: NAME} / {file: PATH}")
}

// NewSecret wraps a value (tests, the demo).
func NewSecret(v string) Secret { return Secret{value: v, source: "program"} }

// Value returns the secret itself; pass it only to the client that needs it.
func (s Secret) Value() string { return s.value }

// Set reports whether a value was given.
func (s Secret) Set() bool { return s.value != "" }

// String never reveals the value.
func (s Secret) String() string {
	if s.value == "" {
		return "[unset]"
	}
	return "[redacted " + s.source + "]"
}

// GoString keeps the value out of %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps the value out of structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML keeps the value out of dumped configs.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// LoadConfig reads and validates one or more YAML config files. Later files
// are laid over earlier ones key by key (a base config, then the fragment
// notifyd sandbox writes). Unknown keys are errors: a typo must not
// silently fall back to a default. Every problem in every file is reported
// at once (ConfigErrors), each with its file, line and key path.
func LoadConfig(paths ...string) (*Config, error) {
	if len(paths) == 0 {
		return nil, errors.New("read config: no file given")
	}
	srcs := make([]configSource, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		srcs = append(srcs, configSource{name: p, body: b})
	}
	return parseConfigs(srcs)
}

// ParseConfig decodes and validates YAML config bytes.
func ParseConfig(b []byte) (*Config, error) {
	return parseConfigs([]configSource{{body: b}})
}

type configSource struct {
	name string
	body []byte
}

func parseConfigs(srcs []configSource) (*Config, error) {
	var (
		c     Config
		errs  ConfigErrors
		where = map[string]*ConfigError{} // key path → its last location
	)
	for _, src := range srcs {
		var root yaml.Node
		if err := yaml.Unmarshal(src.body, &root); err != nil {
			errs = append(errs, &ConfigError{File: src.name, Msg: "parse YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
			continue
		}
		if root.Kind == 0 {
			continue // an empty file
		}
		chk := &configChecker{file: src.name, lines: map[string]int{}}
		chk.check(&root, reflect.TypeFor[Config](), "")
		sortByLine(chk.errs)
		errs = append(errs, chk.errs...)
		for p, line := range chk.lines {
			where[p] = &ConfigError{File: src.name, Line: line}
		}
		dec := yaml.NewDecoder(bytes.NewReader(src.body))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) && len(chk.errs) == 0 {
			// The checker missed what the decoder found: report it as the
			// decoder words it, without Go type names.
			var te *yaml.TypeError
			if errors.As(err, &te) {
				for _, e := range te.Errors {
					errs = append(errs, &ConfigError{File: src.name, Msg: readableYAMLError(e)})
				}
			} else {
				errs = append(errs, &ConfigError{File: src.name, Msg: err.Error()})
			}
		}
	}
	reported := map[string]bool{}
	for _, e := range errs {
		reported[e.Path] = true
	}
	c.applyDefaults()
	for _, e := range c.validate() {
		if reported[e.Path] {
			continue // an unset variable already explains an empty value
		}
		// A missing key is located at its nearest parent that is present.
		for p := e.Path; p != ""; {
			if w, ok := where[p]; ok {
				e.File, e.Line = w.File, w.Line
				break
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// checkToken refuses tokens that cannot authenticate or are easy to guess.
// A token with spaces started before but never matched (clients trim
// header values); one of a few repeated characters passes the length check
// while offering little entropy. The message never quotes the token.
func checkToken(tok string) error {
	if len(tok) < 16 {
		return errors.New("must be at least 16 characters")
	}
	distinct := map[rune]bool{}
	for _, r := range tok {
		if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
			return errors.New("must not contain spaces or control characters (HTTP clients trim them from the header)")
		}
		distinct[r] = true
	}
	if len(distinct) < 8 {
		return fmt.Errorf("too predictable: %d distinct characters; use a random one, e.g. openssl rand -hex 32", len(distinct))
	}
	return nil
}

// readableYAMLError rewrites the decoder's "line 3: field batch_sise not
// found in type daemon.EngineConfig" as "line 3: unknown key batch_sise":
// an operator knows the file's keys, not the daemon's Go types.
func readableYAMLError(e string) string {
	before, rest, ok := strings.Cut(e, "field ")
	if !ok {
		return e
	}
	key, _, ok := strings.Cut(rest, " not found in type ")
	if !ok {
		return e
	}
	return before + "unknown key " + key + " (see notifyd.example.yaml)"
}

// exposedWithoutTLS reports whether the admin API listens beyond loopback;
// it has no TLS of its own, so the token would cross the network in clear.
func exposedWithoutTLS(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && !tcp.IP.IsLoopback()
}

func (c *Config) applyDefaults() {
	if c.Shard.PollInterval == 0 {
		c.Shard.PollInterval = Duration(2 * time.Second)
	}
	if c.Redis.Prefix == "" {
		c.Redis.Prefix = "notifyd:"
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:8080"
	}
	if c.Engine.ShutdownTimeout == 0 {
		c.Engine.ShutdownTimeout = Duration(30 * time.Second)
	}
}

// Validate checks what defaults cannot fix.
func (c *Config) Validate() error {
	if errs := c.validate(); len(errs) > 0 {
		return errs
	}
	return nil
}

// validate returns every semantic problem, each naming its key path.
func (c *Config) validate() ConfigErrors {
	var errs ConfigErrors
	add := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Shard.Path == "" {
		add("shard.path", "required (the shard file the co-located store publishes)")
	}
	if !c.Admin.Token.Set() {
		add("admin.token", "required (e.g. token: {env: NOTIFYD_ADMIN_TOKEN})")
	} else if err := checkToken(c.Admin.Token.Value()); err != nil {
		add("admin.token", "%v", err)
	}
	if c.Admin.TLS != nil {
		if _, err := c.Admin.TLS.serverConfig(); err != nil {
			add("admin.tls", "%v", err)
		}
	}
	errs = append(errs, c.Redis.validate()...)
	if err := campaigns.ValidateCapRules("policies.frequency_caps", c.Policies.CapRules()); err != nil {
		var fe *campaigns.FieldError
		if errors.As(err, &fe) {
			add(fe.Field, "%s", fe.Msg)
		}
	}
	errs = append(errs, c.Channels.validate()...)
	errs = append(errs, c.DeliveryLog.validate()...)
	errs = append(errs, c.Tracking.validate()...)
	errs = append(errs, c.Runtime.validate()...)
	if err := c.Templates.Limits.Ceilings().CheckCeilings(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			// The templates package words them "max_steps: ...".
			key, msg, ok := strings.Cut(e.Error(), ": ")
			if !ok {
				key, msg = "", e.Error()
			}
			add(join("templates.limits", key), "%s", msg)
		}
	}
	return errs
}

// Enabled reports whether state goes to Redis (one node or a cluster).
func (c RedisConfig) Enabled() bool { return c.URL.Set() || len(c.ClusterAddrs) > 0 }

func (c RedisConfig) validate() ConfigErrors {
	var errs ConfigErrors
	if c.URL.Set() && len(c.ClusterAddrs) > 0 {
		errs = append(errs, &ConfigError{Path: "redis", Msg: "url and cluster_addrs are both set; give url for one node or cluster_addrs for a Redis Cluster"})
	}
	if c.URL.Set() && (c.Username != "" || c.Password.Set() || c.TLS) {
		errs = append(errs, &ConfigError{Path: "redis", Msg: "username, password and tls go with cluster_addrs; a url carries its own (redis://user:pass@host or rediss://)"})
	}
	for i, a := range c.ClusterAddrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs = append(errs, &ConfigError{Path: fmt.Sprintf("redis.cluster_addrs[%d]", i), Msg: fmt.Sprintf("%q is not host:port", a)})
		}
	}
	if c.CapGroupBits != 0 && (c.CapGroupBits < 6 || c.CapGroupBits > 32) {
		errs = append(errs, &ConfigError{Path: "redis.cap_group_bits", Msg: fmt.Sprintf("%d, want 6 to 32 (about log2(users / 16))", c.CapGroupBits)})
	}
	return errs
}
