package tailview

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/notifyd/notifyd/daemon"
)

// ANSI sequences of the in-place screen. Plain escape codes rather than a
// TUI framework: the view is output-only (no input, no layout engine
// needed), and golden tests compare its exact bytes.
const (
	enterScreen = "\x1b[?1049h\x1b[?25l" // alternate screen, hide the cursor
	leaveScreen = "\x1b[?25h\x1b[?1049l"
	home        = "\x1b[H"
	clearLine   = "\x1b[K"
	clearBelow  = "\x1b[J"
)

// barWidth is the campaign progress bar's width in cells.
const barWidth = 20

// Screen renders a snapshot as the lines of the in-place view, each at
// most width cells (0: no limit). Tables that do not fit drop their least
// important columns rather than cut a number; free text is cut with "…".
// status, when set, is shown at the bottom (e.g. "disconnected:
// reconnecting in 2s").
//
// Every count on the screen is of messages: one per address, so a member
// with two devices counts twice on apns. Rates are messages per second.
func Screen(s *daemon.Snapshot, width int, status string) []string {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, cut(fmt.Sprintf(format, args...), width)) }

	// The heading loses whole parts from the right when narrow.
	head := "notifyd live"
	parts := []string{s.Time.UTC().Format("2006-01-02 15:04:05 UTC"), "frame " + strconv.FormatUint(s.Seq, 10)}
	if s.Shard != nil {
		parts = append(parts, "shard gen "+strconv.FormatUint(s.Shard.Generation, 10)+" ("+count(int64(s.Shard.Rows))+" rows)")
	}
	for _, p := range parts {
		if width > 0 && utf8.RuneCountInString(head)+3+utf8.RuneCountInString(p) > width {
			break
		}
		head += " · " + p
	}
	add("%s", head)
	add("%s", "messages (one per address) · rates per second · q quits")
	add("")

	chans := &table{cols: []column{
		{head: "CHANNEL", width: 10, left: true},
		{head: "MSG/S", width: 9, prio: 1},
		{head: "FAIL/S", width: 8, prio: 3},
		{head: "SENT", width: 11, prio: 1},
		{head: "FAILED", width: 8, prio: 2},
		{head: "SKIPPED", width: 8, prio: 4},
		{head: "QUEUE", width: 8, prio: 3},
		{head: "INFL", width: 6, prio: 5},
		{head: "P50 ms", width: 8, prio: 6},
		{head: "P99 ms", width: 8, prio: 2},
	}}
	var tot daemon.ChannelSnapshot
	var failed, skipped int64
	for _, name := range sorted(s.Channels) {
		c := s.Channels[name]
		chans.row(name, rate(c.SentPerS), rate(c.FailedPerS), count(c.Sent),
			count(c.FailedTotal()), count(c.SkippedTotal()), count(int64(c.QueueDepth)), count(int64(c.InFlight)),
			ms(c.Latency.P50Ms, c.Latency.Samples), ms(c.Latency.P99Ms, c.Latency.Samples))
		tot.SentPerS += c.SentPerS
		tot.FailedPerS += c.FailedPerS
		tot.Sent += c.Sent
		tot.QueueDepth += c.QueueDepth
		tot.InFlight += c.InFlight
		failed += c.FailedTotal()
		skipped += c.SkippedTotal()
	}
	if len(s.Channels) > 1 {
		chans.row("total", rate(tot.SentPerS), rate(tot.FailedPerS), count(tot.Sent),
			count(failed), count(skipped), count(int64(tot.QueueDepth)), count(int64(tot.InFlight)), "", "")
	}
	lines = append(lines, chans.render(width)...)
	for _, name := range sorted(s.Channels) {
		if r := reasons(s.Channels[name].Failed, 4, width-len(name)-10); r != "" {
			add("  %s failed: %s", name, r)
		}
	}

	add("")
	if len(s.Campaigns) == 0 {
		add("no campaigns running or finished in the last 15 minutes")
	} else {
		camps := &table{cols: []column{
			{head: "CAMPAIGN", width: 18, left: true},
			{head: "STATUS", width: 10, left: true, prio: 1},
			{head: "DONE", width: 6},
			{head: "PROGRESS", width: barWidth + 2, left: true, prio: 5},
			{head: "MSG/S", width: 9, prio: 1},
			{head: "SENT", width: 11, prio: 1},
			{head: "FAILED", width: 8, prio: 2},
			{head: "SKIPPED", width: 8, prio: 3},
		}}
		var notes []string
		for _, id := range sorted(s.Campaigns) {
			c := s.Campaigns[id]
			camps.row(cut(id, 18), c.Status, percent(c), bar(c), rate(c.SettledPerS),
				count(c.Sent), count(c.FailedTotal()), count(c.SkippedTotal()))
			// The note line is "  failed: … · skipped: …": failures get
			// up to half of it, skips what is left.
			var parts []string
			room := 0
			if width > 0 {
				room = max(width-2, 1)
			}
			if r := reasons(c.Failed, 3, budget(width, room/2-len("failed: "))); r != "" {
				parts = append(parts, "failed: "+r)
			}
			if width > 0 && len(parts) > 0 {
				room -= utf8.RuneCountInString(parts[0]) + len(" · ")
			}
			if r := reasons(c.Skipped, 3, budget(width, room-len("skipped: "))); r != "" {
				parts = append(parts, "skipped: "+r)
			}
			notes = append(notes, strings.Join(parts, " · "))
		}
		for i, l := range camps.render(width) {
			add("%s", l)
			if i > 0 && notes[i-1] != "" {
				add("  %s", notes[i-1])
			}
		}
	}
	if len(s.Flows) > 0 {
		add("")
		flows := &table{cols: []column{
			{head: "FLOW", width: 20, left: true},
			{head: "STATUS", width: 10, left: true, prio: 1},
			{head: "MSG/S", width: 9, prio: 1},
			{head: "SENT", width: 11, prio: 1},
			{head: "FAILED", width: 8, prio: 2},
			{head: "SKIPPED", width: 8, prio: 3},
		}}
		for _, id := range sorted(s.Flows) {
			f := s.Flows[id]
			flows.row(cut(id, 20), f.Status, rate(f.SentPerS), count(f.Sent), count(f.FailedTotal()), count(f.SkippedTotal()))
		}
		lines = append(lines, flows.render(width)...)
	}
	if status != "" {
		add("")
		add("● %s", status)
	}
	return lines
}

// column is one column of a table. prio 0 columns are always shown; when
// the width is short, the highest prio goes first.
type column struct {
	head  string
	width int
	prio  int
	left  bool
}

// table lays out rows so that a narrow terminal loses whole columns: a
// number cut to fit would read as another number.
type table struct {
	cols []column
	rows [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

// render returns the header and rows in the widest layout that fits width
// (0: all columns). A cell wider than its column widens the column.
func (t *table) render(width int) []string {
	widths := make([]int, len(t.cols))
	for i, c := range t.cols {
		widths[i] = max(c.width, utf8.RuneCountInString(c.head))
		for _, r := range t.rows {
			if i < len(r) {
				widths[i] = max(widths[i], utf8.RuneCountInString(r[i]))
			}
		}
	}
	shown := make([]bool, len(t.cols))
	total := -1
	for i := range t.cols {
		shown[i] = true
		total += widths[i] + 1
	}
	for width > 0 && total > width {
		drop := -1
		for i, c := range t.cols {
			if shown[i] && c.prio > 0 && (drop < 0 || c.prio >= t.cols[drop].prio) {
				drop = i
			}
		}
		if drop < 0 {
			break
		}
		shown[drop] = false
		total -= widths[drop] + 1
	}
	line := func(cells []string) string {
		var b strings.Builder
		for i, c := range t.cols {
			if !shown[i] {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			cell := ""
			if i < len(cells) {
				cell = cells[i]
			}
			pad := strings.Repeat(" ", max(widths[i]-utf8.RuneCountInString(cell), 0))
			if c.left {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
		}
		return strings.TrimRight(b.String(), " ")
	}
	heads := make([]string, len(t.cols))
	for i, c := range t.cols {
		heads[i] = c.head
	}
	out := []string{cut(line(heads), width)}
	for _, r := range t.rows {
		out = append(out, cut(line(r), width))
	}
	return out
}

// Line renders a snapshot as one plain line: what `notifyd tail` prints
// once per second when its output is not a terminal (grep- and log-friendly
// key=value pairs).
func Line(s *daemon.Snapshot) string {
	var b strings.Builder
	b.WriteString(s.Time.UTC().Format("2006-01-02T15:04:05Z"))
	for _, name := range sorted(s.Channels) {
		c := s.Channels[name]
		fmt.Fprintf(&b, " | %s sent/s=%s sent=%d failed=%d skipped=%d queue=%d inflight=%d p99_ms=%s",
			name, rate(c.SentPerS), c.Sent, c.FailedTotal(), c.SkippedTotal(), c.QueueDepth, c.InFlight, ms(c.Latency.P99Ms, c.Latency.Samples))
	}
	for _, id := range sorted(s.Campaigns) {
		c := s.Campaigns[id]
		p := "-"
		if c.Progress != nil {
			p = strconv.FormatFloat(*c.Progress*100, 'f', 1, 64) + "%"
		}
		fmt.Fprintf(&b, " | campaign=%s status=%s progress=%s rate/s=%s sent=%d failed=%d skipped=%d",
			id, c.Status, p, rate(c.SettledPerS), c.Sent, c.FailedTotal(), c.SkippedTotal())
	}
	for _, id := range sorted(s.Flows) {
		f := s.Flows[id]
		fmt.Fprintf(&b, " | flow=%s status=%s sent/s=%s sent=%d failed=%d", id, f.Status, rate(f.SentPerS), f.Sent, f.FailedTotal())
	}
	return b.String()
}

// WriteScreen redraws the in-place view: home, each line cleared to its
// end, the rest of the screen cleared. No full clear: that flickers.
func WriteScreen(w io.Writer, lines []string) error {
	var b strings.Builder
	b.WriteString(home)
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString(clearLine)
		b.WriteString("\r\n")
	}
	b.WriteString(clearBelow)
	_, err := io.WriteString(w, b.String())
	return err
}

// percent is a campaign's share of settled messages: "25.3%", "-" when unknown.
func percent(c daemon.CampaignSnapshot) string {
	if c.Progress == nil {
		return "-"
	}
	return strconv.FormatFloat(min(max(*c.Progress, 0), 1)*100, 'f', 1, 64) + "%"
}

func bar(c daemon.CampaignSnapshot) string {
	if c.Progress == nil {
		return "[" + strings.Repeat("?", barWidth) + "]"
	}
	full := int(min(max(*c.Progress, 0), 1)*barWidth + 0.5)
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", barWidth-full) + "]"
}

// reasons lists the largest counts first, "dead_address 10, rejected 2,
// +3 more", in at most width cells (0: no limit): entries that do not fit
// are folded into "+N more" instead of being cut mid-number.
func reasons(m map[string]int64, top, width int) string {
	type kv struct {
		k string
		v int64
	}
	var list []kv
	for k, v := range m {
		if v > 0 {
			list = append(list, kv{k, v})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].v != list[j].v {
			return list[i].v > list[j].v
		}
		return list[i].k < list[j].k
	})
	var parts []string
	used := 0
	for i, e := range list {
		p := e.k + " " + count(e.v)
		more := fmt.Sprintf("+%d more", len(list)-i)
		fits := width <= 0 || used+len(p)+len(", ")+len(more) <= width || (i == len(list)-1 && used+len(p) <= width)
		if i == top || !fits {
			if width > 0 && used+len(more) > width && len(parts) > 0 {
				// make room for the tail by folding the last entry in too
				used -= len(parts[len(parts)-1]) + 2
				parts = parts[:len(parts)-1]
				more = fmt.Sprintf("+%d more", len(list)-i+1)
			}
			parts = append(parts, more)
			break
		}
		parts = append(parts, p)
		used += len(p) + 2
	}
	return strings.Join(parts, ", ")
}

// budget is a width for reasons: 0 (no limit) on an unlimited screen,
// else at least 1.
func budget(width, n int) int {
	if width <= 0 {
		return 0
	}
	return max(n, 1)
}

func sorted[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func rate(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func ms(v float64, samples uint64) string {
	if samples == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// count formats with thousands separators: 1,234,567.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// cut shortens s to width cells (runes; the view uses no wide characters).
func cut(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	if width == 1 {
		return "…"
	}
	return string(r[:width-1]) + "…"
}
