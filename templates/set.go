package templates

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/osteele/liquid/render"

	"github.com/notifyd/notifyd/channels"
)

// Channel names as they appear in Spec, errors and RenderError.Channel. Push
// content serves both APNs and FCM.
const (
	ChannelPush    = "push"
	ChannelEmail   = "email"
	ChannelSMS     = "sms"
	ChannelWebPush = "webpush"
	ChannelWebhook = "webhook"
)

// Set is a campaign's compiled templates. It is safe for concurrent use by
// any number of workers.
type Set struct {
	missing  Missing
	limits   Limits
	now      func() time.Time
	currency string
	campaign map[string]any
	cfg      render.Config

	def     *variant
	locales []localeVariant

	zones sync.Map // IANA name -> *time.Location; loading a zone reads the zone database
	pool  sync.Pool
}

type localeVariant struct {
	tag string
	v   *variant
}

type variant struct {
	push    *pushFields
	email   *emailFields
	sms     *smsFields
	webpush *webPushFields
	webhook *webhookFields
}

type pushFields struct {
	title, body, sound, badge, deepLink, image, data, collapseID, threadID *field
}

type emailFields struct {
	from, replyTo, subject, html, text, listUnsubscribe *field
	headers                                             []headerField
	oneClick                                            bool
}

type headerField struct {
	name  string
	value *field
}

type smsFields struct{ body, from *field }

type webPushFields struct{ title, body, icon, url, tag *field }

type webhookFields struct {
	method, url, body *field
	headers           []headerField
	jsonBody          bool
}

type compiler struct {
	channel, locale string
	limits          Limits
	missing         Missing
	cfg             render.Config
	errs            []error
	// probe renders each compiled field once on a stand-in recipient, so a
	// template that cannot fit the budget whatever the data is refused at
	// create time instead of failing every recipient.
	probe *state
}

// Compile checks and compiles spec. It returns every problem at once, each
// a *CompileError naming the channel, field, line and column, joined with
// errors.Join.
func Compile(spec Spec, opts Options) (*Set, error) {
	return compile(spec, opts, true)
}

// compile is Compile; probe=false skips the create-time budget check, so
// tests can reach the render-time defences that stored campaigns rely on.
func compile(spec Spec, opts Options, probe bool) (*Set, error) {
	limits, limitErrs := spec.Limits.within(opts.Ceilings)
	s := &Set{
		missing:  spec.Missing,
		limits:   limits,
		now:      opts.Now,
		currency: strings.ToUpper(opts.Currency),
		cfg:      newEngineConfig(nil),
	}
	if s.missing == "" {
		s.missing = MissingBlank
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.currency == "" {
		s.currency = "USD"
	}
	vars := opts.Campaign.Vars
	if vars == nil {
		vars = map[string]any{}
	}
	s.campaign = map[string]any{"id": opts.Campaign.ID, "name": opts.Campaign.Name, "vars": vars}
	s.pool.New = func() any { return &state{buf: make([]byte, 0, 512), args: make([]any, 0, 4)} }

	c := &compiler{limits: s.limits, missing: s.missing, cfg: s.cfg, errs: limitErrs}
	if len(limitErrs) > 0 {
		// Compiling under limits the caller may not have would only add
		// noise (and work) to the answer.
		return nil, errors.Join(limitErrs...)
	}
	if probe {
		c.probe = s.acquire(probeProfile{}, map[string]any{})
		defer s.release(c.probe)
	}
	if s.missing != MissingBlank && s.missing != MissingSkip {
		c.errs = append(c.errs, &CompileError{Field: "missing", Err: fmt.Errorf("missing must be %q or %q, got %q", MissingBlank, MissingSkip, s.missing)})
	}
	s.def = c.compileContent(spec.Content)
	if spec.Push == nil && spec.Email == nil && spec.SMS == nil && spec.WebPush == nil && spec.Webhook == nil {
		c.errs = append(c.errs, &CompileError{Field: "content", Err: errors.New("no channel content")})
	}
	tags := make([]string, 0, len(spec.Locales))
	for tag := range spec.Locales {
		tags = append(tags, tag)
	}
	sort.Strings(tags) // deterministic error order
	for _, tag := range tags {
		if !validLocaleTag(tag) {
			c.errs = append(c.errs, &CompileError{Locale: tag, Field: "locales", Err: fmt.Errorf("bad locale tag %q", tag)})
			continue
		}
		c.locale = tag
		merged, err := mergeContent(spec.Content, spec.Locales[tag])
		if err != nil {
			c.errs = append(c.errs, &CompileError{Locale: tag, Field: "locales", Err: err})
			continue
		}
		s.locales = append(s.locales, localeVariant{tag: tag, v: c.compileContent(merged)})
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return s, nil
}

func validLocaleTag(tag string) bool {
	if tag == "" || len(tag) > 35 {
		return false
	}
	for i := 0; i < len(tag); i++ {
		ch := tag[i]
		if !(ch == '-' || ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) {
			return false
		}
	}
	return true
}

func (c *compiler) compileContent(ct Content) *variant {
	v := &variant{}
	fieldCap := c.limits.MaxFieldBytes
	if p := ct.Push; p != nil {
		c.channel = ChannelPush
		v.push = &pushFields{
			title:      c.compileField("title", p.Title, modePlain, false, fieldCap),
			body:       c.compileField("body", p.Body, modePlain, false, fieldCap),
			sound:      c.compileField("sound", p.Sound, modeLine, false, fieldCap),
			badge:      c.compileField("badge", p.Badge, modeLine, false, fieldCap),
			deepLink:   c.compileField("deep_link", p.DeepLink, modeLine, false, fieldCap),
			image:      c.compileField("image", p.Image, modeLine, false, fieldCap),
			data:       c.compileField("data", string(p.Data), modePlain, true, fieldCap),
			collapseID: c.compileField("collapse_id", p.CollapseID, modeLine, false, fieldCap),
			threadID:   c.compileField("thread_id", p.ThreadID, modeLine, false, fieldCap),
		}
		if d := strings.TrimSpace(string(p.Data)); d != "" && !strings.HasPrefix(d, "{") {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "data", Err: errors.New("data must be a JSON object")})
		}
		if p.Title == "" && p.Body == "" && len(p.Data) == 0 {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "body", Err: errors.New("push needs a title, a body or data")})
		}
	}
	if e := ct.Email; e != nil {
		c.channel = ChannelEmail
		v.email = &emailFields{
			from:            c.compileField("from", e.From, modeLine, false, fieldCap),
			replyTo:         c.compileField("reply_to", e.ReplyTo, modeLine, false, fieldCap),
			subject:         c.compileField("subject", e.Subject, modeLine, false, fieldCap),
			html:            c.compileField("html", e.HTML, modeHTML, false, c.limits.MaxHTMLBytes),
			text:            c.compileField("text", e.Text, modePlain, false, fieldCap),
			listUnsubscribe: c.compileField("list_unsubscribe", e.ListUnsubscribe, modeLine, false, fieldCap),
			headers:         c.compileHeaders(e.Headers, fieldCap),
			oneClick:        e.ListUnsubscribeOneClick,
		}
		if e.Subject == "" {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "subject", Err: errors.New("email needs a subject")})
		}
		if e.HTML == "" && e.Text == "" {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "html", Err: errors.New("email needs an html or a text body")})
		}
	}
	if m := ct.SMS; m != nil {
		c.channel = ChannelSMS
		v.sms = &smsFields{
			body: c.compileField("body", m.Body, modePlain, false, fieldCap),
			from: c.compileField("from", m.From, modeLine, false, fieldCap),
		}
		if m.Body == "" {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "body", Err: errors.New("sms needs a body")})
		}
	}
	if w := ct.WebPush; w != nil {
		c.channel = ChannelWebPush
		v.webpush = &webPushFields{
			title: c.compileField("title", w.Title, modePlain, false, fieldCap),
			body:  c.compileField("body", w.Body, modePlain, false, fieldCap),
			icon:  c.compileField("icon", w.Icon, modeLine, false, fieldCap),
			url:   c.compileField("url", w.URL, modeLine, false, fieldCap),
			tag:   c.compileField("tag", w.Tag, modeLine, false, fieldCap),
		}
		if w.Title == "" && w.Body == "" {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "title", Err: errors.New("web push needs a title or a body")})
		}
	}
	if h := ct.Webhook; h != nil {
		c.channel = ChannelWebhook
		jsonBody := webhookBodyIsJSON(h)
		method := h.Method
		if method == "" {
			method = "POST"
		}
		v.webhook = &webhookFields{
			method:   c.compileField("method", method, modeLine, false, 16),
			url:      c.compileField("url", h.URL, modeLine, false, fieldCap),
			body:     c.compileField("body", string(h.Body), modePlain, jsonBody, fieldCap),
			headers:  c.compileHeaders(h.Headers, fieldCap),
			jsonBody: jsonBody,
		}
		// An empty url sends to the webhook channel's configured default endpoint.
		if h.URL != "" && !strings.Contains(h.URL, "{") {
			if err := checkWebhookURL(h.URL); err != nil {
				c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "url", Err: err})
			}
		}
	}
	return v
}

func (c *compiler) compileHeaders(h map[string]string, fieldCap int) []headerField {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]headerField, 0, len(names))
	for _, name := range names {
		if !validHeaderName(name) {
			c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: "headers", Err: fmt.Errorf("bad header name %q", name)})
			continue
		}
		out = append(out, headerField{name: name, value: c.compileField("headers."+name, h[name], modeLine, false, fieldCap)})
	}
	return out
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch <= ' ' || ch >= 0x7f || ch == ':' || strings.IndexByte("()<>@,;\\\"/[]?={}", ch) >= 0 {
			return false
		}
	}
	return true
}

func webhookBodyIsJSON(h *WebhookSpec) bool {
	for name, value := range h.Headers {
		if strings.EqualFold(name, "Content-Type") {
			return strings.Contains(strings.ToLower(value), "json")
		}
	}
	b := strings.TrimSpace(string(h.Body))
	return strings.HasPrefix(b, "{") || strings.HasPrefix(b, "[")
}

func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("url must be an absolute http or https URL")
	}
	return nil
}

// mergeContent lays a locale variant over the default content: non-empty
// variant fields win. A variant cannot add a channel the default lacks, so
// every recipient of a channel has content for it.
func mergeContent(base, over Content) (Content, error) {
	out := base
	if over.Push != nil {
		if base.Push == nil {
			return out, errors.New("variant has push content but the default has none")
		}
		p := *base.Push
		o := over.Push
		setIf(&p.Title, o.Title)
		setIf(&p.Body, o.Body)
		setIf(&p.Sound, o.Sound)
		setIf(&p.Badge, o.Badge)
		setIf(&p.DeepLink, o.DeepLink)
		setIf(&p.Image, o.Image)
		setIf(&p.CollapseID, o.CollapseID)
		setIf(&p.ThreadID, o.ThreadID)
		if o.Data != "" {
			p.Data = o.Data
		}
		out.Push = &p
	}
	if over.Email != nil {
		if base.Email == nil {
			return out, errors.New("variant has email content but the default has none")
		}
		e := *base.Email
		o := over.Email
		setIf(&e.From, o.From)
		setIf(&e.ReplyTo, o.ReplyTo)
		setIf(&e.Subject, o.Subject)
		setIf(&e.HTML, o.HTML)
		setIf(&e.Text, o.Text)
		setIf(&e.ListUnsubscribe, o.ListUnsubscribe)
		e.Headers = mergeHeaders(e.Headers, o.Headers)
		out.Email = &e
	}
	if over.SMS != nil {
		if base.SMS == nil {
			return out, errors.New("variant has sms content but the default has none")
		}
		m := *base.SMS
		setIf(&m.Body, over.SMS.Body)
		setIf(&m.From, over.SMS.From)
		out.SMS = &m
	}
	if over.WebPush != nil {
		if base.WebPush == nil {
			return out, errors.New("variant has webpush content but the default has none")
		}
		w := *base.WebPush
		o := over.WebPush
		setIf(&w.Title, o.Title)
		setIf(&w.Body, o.Body)
		setIf(&w.Icon, o.Icon)
		setIf(&w.URL, o.URL)
		setIf(&w.Tag, o.Tag)
		out.WebPush = &w
	}
	if over.Webhook != nil {
		if base.Webhook == nil {
			return out, errors.New("variant has webhook content but the default has none")
		}
		h := *base.Webhook
		o := over.Webhook
		setIf(&h.Method, o.Method)
		setIf(&h.URL, o.URL)
		if o.Body != "" {
			h.Body = o.Body
		}
		h.Headers = mergeHeaders(h.Headers, o.Headers)
		out.Webhook = &h
	}
	return out, nil
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func mergeHeaders(base, over map[string]string) map[string]string {
	if len(over) == 0 {
		return base
	}
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// zone loads and caches a recipient's time zone; unknown or empty names are UTC.
func (s *Set) zone(name string) *time.Location {
	if name == "" || name == "UTC" {
		return time.UTC
	}
	if loc, ok := s.zones.Load(name); ok {
		return loc.(*time.Location)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = time.UTC
	}
	s.zones.Store(name, loc)
	return loc
}

// variantFor picks content by the chain pt-BR → pt → default.
func (s *Set) variantFor(p Profile) *variant {
	_, v := s.pick(p)
	return v
}

// Locale is the tag of the locale variant p's content renders with ("" for
// the default content): what the delivery log records as the locale.
func (s *Set) Locale(p Profile) string {
	tag, _ := s.pick(p)
	return tag
}

func (s *Set) pick(p Profile) (string, *variant) {
	if p == nil || len(s.locales) == 0 {
		return "", s.def
	}
	loc := p.Locale()
	if loc == "" {
		return "", s.def
	}
	for _, lv := range s.locales {
		if sameLocale(lv.tag, loc) {
			return lv.tag, lv.v
		}
	}
	lang := loc
	if i := strings.IndexAny(loc, "-_"); i >= 0 {
		lang = loc[:i]
	}
	for _, lv := range s.locales {
		if sameLocale(lv.tag, lang) {
			return lv.tag, lv.v
		}
	}
	return "", s.def
}

// sameLocale compares tags case-insensitively with _ and - equivalent.
func sameLocale(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x|0x20 != y|0x20 && x != y {
			return false
		}
	}
	return true
}

// Has reports whether the campaign has content for channel (a Channel* constant).
func (s *Set) Has(channel string) bool {
	switch channel {
	case ChannelPush, channels.APNs, channels.FCM:
		return s.def.push != nil
	case ChannelEmail:
		return s.def.email != nil
	case ChannelSMS:
		return s.def.sms != nil
	case ChannelWebPush:
		return s.def.webpush != nil
	case ChannelWebhook:
		return s.def.webhook != nil
	}
	return false
}

func (s *Set) acquire(p Profile, event map[string]any) *state {
	st := s.pool.Get().(*state)
	st.reset(s, p, event)
	return st
}

func (s *Set) release(st *state) {
	// Keep pooled buffers small; one huge email must not pin memory.
	if cap(st.buf) > 64<<10 {
		st.buf = make([]byte, 0, 512)
	}
	st.p, st.event, st.set = nil, nil, nil
	clear(st.args[:cap(st.args)])
	s.pool.Put(st)
}

func noContent(channel string) error {
	return &RenderError{Channel: channel, Field: "content", Reason: ReasonInvalidOutput, Err: errNoContent}
}

// strOut pairs a compiled field with the string it renders into.
type strOut struct {
	dst *string
	f   *field
}

// renderStrs renders each field into its destination, stopping at the
// first error.
func renderStrs(st *state, outs ...strOut) error {
	for _, o := range outs {
		var err error
		if *o.dst, err = o.f.str(st); err != nil {
			return err
		}
	}
	return nil
}

// RenderPush renders push content for p into dst, reusing dst.Data's and
// dst.Badge's storage: do not reuse a dst whose message is still in flight.
// event is the trigger's properties (nil for campaigns).
func (s *Set) RenderPush(p Profile, event map[string]any, dst *channels.Push) error {
	pf := s.variantFor(p).push
	if pf == nil {
		return noContent(ChannelPush)
	}
	st := s.acquire(p, event)
	defer s.release(st)
	err := renderStrs(st, []strOut{
		{&dst.Title, pf.title}, {&dst.Body, pf.body}, {&dst.Sound, pf.sound},
		{&dst.DeepLink, pf.deepLink}, {&dst.ImageURL, pf.image},
		{&dst.CollapseID, pf.collapseID}, {&dst.ThreadID, pf.threadID},
	}...)
	if err != nil {
		return err
	}
	badge, err := pf.badge.str(st)
	if err != nil {
		return err
	}
	if badge = strings.TrimSpace(badge); badge == "" {
		dst.Badge = nil
	} else {
		n, perr := strconv.Atoi(badge)
		if perr != nil {
			return &RenderError{Channel: ChannelPush, Field: "badge", Reason: ReasonInvalidOutput, Err: fmt.Errorf("badge %q is not an integer", truncateForError(badge))}
		}
		if dst.Badge == nil {
			dst.Badge = new(int)
		}
		*dst.Badge = n
	}
	data, err := pf.data.appendTo(st, dst.Data[:0])
	if err != nil {
		return err
	}
	if len(data) == 0 {
		data = nil
	}
	dst.Data = data
	return nil
}

// RenderMail renders email content for p into dst, reusing dst.Headers.
func (s *Set) RenderMail(p Profile, event map[string]any, dst *channels.Mail) error {
	ef := s.variantFor(p).email
	if ef == nil {
		return noContent(ChannelEmail)
	}
	st := s.acquire(p, event)
	defer s.release(st)
	err := renderStrs(st, []strOut{
		{&dst.From, ef.from}, {&dst.ReplyTo, ef.replyTo}, {&dst.Subject, ef.subject},
		{&dst.HTML, ef.html}, {&dst.Text, ef.text}, {&dst.ListUnsubscribe, ef.listUnsubscribe},
	}...)
	if err != nil {
		return err
	}
	dst.ListUnsubscribeOneClick = ef.oneClick && dst.ListUnsubscribe != ""
	dst.Headers, err = renderHeaders(st, ef.headers, dst.Headers)
	return err
}

// RenderText renders SMS content for p into dst and reports its encoding
// and segment count.
func (s *Set) RenderText(p Profile, event map[string]any, dst *channels.Text) error {
	mf := s.variantFor(p).sms
	if mf == nil {
		return noContent(ChannelSMS)
	}
	st := s.acquire(p, event)
	defer s.release(st)
	var err error
	if dst.Body, err = mf.body.str(st); err != nil {
		return err
	}
	if strings.ContainsAny(dst.Body, nbsp+narrowNbsp) {
		// money and number use no-break spaces, which are not GSM-7: one
		// would double the message's cost by forcing UCS-2.
		dst.Body = strings.NewReplacer(nbsp, " ", narrowNbsp, " ").Replace(dst.Body)
	}
	if strings.TrimSpace(dst.Body) == "" {
		return &RenderError{Channel: ChannelSMS, Field: "body", Reason: ReasonInvalidOutput, Err: errors.New("empty SMS body")}
	}
	if dst.From, err = mf.from.str(st); err != nil {
		return err
	}
	dst.Encoding, dst.Segments = SMSEncoding(dst.Body)
	return nil
}

// RenderWebPush renders web push content for p into dst.
func (s *Set) RenderWebPush(p Profile, event map[string]any, dst *channels.WebPushContent) error {
	wf := s.variantFor(p).webpush
	if wf == nil {
		return noContent(ChannelWebPush)
	}
	st := s.acquire(p, event)
	defer s.release(st)
	err := renderStrs(st, []strOut{
		{&dst.Title, wf.title}, {&dst.Body, wf.body}, {&dst.Icon, wf.icon}, {&dst.URL, wf.url}, {&dst.Tag, wf.tag},
	}...)
	if err != nil {
		return err
	}
	return nil
}

// RenderHook renders a webhook request for p into dst, reusing dst.Body and
// dst.Headers. A JSON body without a Content-Type header gets one.
func (s *Set) RenderHook(p Profile, event map[string]any, dst *channels.Hook) error {
	hf := s.variantFor(p).webhook
	if hf == nil {
		return noContent(ChannelWebhook)
	}
	st := s.acquire(p, event)
	defer s.release(st)
	var err error
	if dst.Method, err = hf.method.str(st); err != nil {
		return err
	}
	dst.Method = strings.ToUpper(strings.TrimSpace(dst.Method))
	if !validHeaderName(dst.Method) {
		return &RenderError{Channel: ChannelWebhook, Field: "method", Reason: ReasonInvalidOutput, Err: fmt.Errorf("bad method %q", truncateForError(dst.Method))}
	}
	if dst.URL, err = hf.url.str(st); err != nil {
		return err
	}
	if !hf.url.isConst && dst.URL != "" {
		if err := checkWebhookURL(dst.URL); err != nil {
			return &RenderError{Channel: ChannelWebhook, Field: "url", Reason: ReasonInvalidOutput, Err: err}
		}
	}
	if dst.Headers, err = renderHeaders(st, hf.headers, dst.Headers); err != nil {
		return err
	}
	if hf.jsonBody {
		if _, ok := dst.Headers["Content-Type"]; !ok && !hasHeader(dst.Headers, "Content-Type") {
			if dst.Headers == nil {
				dst.Headers = make(map[string]string, 1)
			}
			dst.Headers["Content-Type"] = "application/json"
		}
	}
	dst.Body, err = hf.body.appendTo(st, dst.Body[:0])
	// A JSON field's output is checked when rendered (or, constant, when
	// compiled); an error leaves the flag off.
	dst.BodyIsJSON = err == nil && hf.body != nil && hf.body.json
	return err
}

func hasHeader(h map[string]string, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func renderHeaders(st *state, fields []headerField, dst map[string]string) (map[string]string, error) {
	if len(fields) == 0 {
		clear(dst)
		return dst, nil
	}
	if dst == nil {
		dst = make(map[string]string, len(fields))
	} else {
		clear(dst)
	}
	for _, h := range fields {
		v, err := h.value.str(st)
		if err != nil {
			return dst, err
		}
		dst[h.name] = v
	}
	return dst, nil
}

// truncateForError keeps rendered values in errors short; they may hold
// profile data, which belongs in the delivery log, not in logs.
func truncateForError(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
