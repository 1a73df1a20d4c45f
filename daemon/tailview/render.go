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

// Screen renders a snapshot as the lines of the in-place view, each cut to
// width cells (0: no limit). status, when set, is shown at the bottom
// (e.g. "disconnected: reconnecting in 2s").
func Screen(s *daemon.Snapshot, width int, status string) []string {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, cut(fmt.Sprintf(format, args...), width)) }

	head := "notifyd live · " + s.Time.UTC().Format("2006-01-02 15:04:05 UTC") + " · frame " + strconv.FormatUint(s.Seq, 10)
	if s.Shard != nil {
		head += " · shard gen " + strconv.FormatUint(s.Shard.Generation, 10) + " (" + count(int64(s.Shard.Rows)) + " rows)"
	}
	add("%s", head)
	add("")
	add("%-10s %9s %8s %11s %8s %8s %8s %6s %8s %8s", "CHANNEL", "SENT/S", "FAIL/S", "SENT", "FAILED", "SKIPPED", "QUEUE", "INFL", "P50 ms", "P99 ms")
	var tot daemon.ChannelSnapshot
	for _, name := range sorted(s.Channels) {
		c := s.Channels[name]
		add("%-10s %9s %8s %11s %8s %8s %8s %6s %8s %8s", name, rate(c.SentPerS), rate(c.FailedPerS), count(c.Sent),
			count(c.FailedTotal()), count(c.SkippedTotal()), count(int64(c.QueueDepth)), count(int64(c.InFlight)),
			ms(c.Latency.P50Ms, c.Latency.Samples), ms(c.Latency.P99Ms, c.Latency.Samples))
		tot.SentPerS += c.SentPerS
		tot.FailedPerS += c.FailedPerS
		tot.Sent += c.Sent
		tot.QueueDepth += c.QueueDepth
		tot.InFlight += c.InFlight
	}
	if len(s.Channels) > 1 {
		var failed, skipped int64
		for _, c := range s.Channels {
			failed += c.FailedTotal()
			skipped += c.SkippedTotal()
		}
		add("%-10s %9s %8s %11s %8s %8s %8s %6s", "total", rate(tot.SentPerS), rate(tot.FailedPerS), count(tot.Sent),
			count(failed), count(skipped), count(int64(tot.QueueDepth)), count(int64(tot.InFlight)))
	}
	for _, name := range sorted(s.Channels) {
		if r := reasons(s.Channels[name].Failed, 4); r != "" {
			add("  %s failed: %s", name, r)
		}
	}

	add("")
	if len(s.Campaigns) == 0 {
		add("no campaigns running or finished in the last 15 minutes")
	} else {
		add("%-18s %-10s %-29s %9s %10s %8s %8s", "CAMPAIGN", "STATUS", "PROGRESS", "RATE/S", "SENT", "FAILED", "SKIPPED")
		for _, id := range sorted(s.Campaigns) {
			c := s.Campaigns[id]
			add("%-18s %-10s %-29s %9s %10s %8s %8s", cut(id, 18), c.Status, progress(c), rate(c.SettledPerS),
				count(c.Sent), count(c.FailedTotal()), count(c.SkippedTotal()))
			var parts []string
			if r := reasons(c.Failed, 3); r != "" {
				parts = append(parts, "failed: "+r)
			}
			if r := reasons(c.Skipped, 3); r != "" {
				parts = append(parts, "skipped: "+r)
			}
			if len(parts) > 0 {
				add("  %s", strings.Join(parts, " · "))
			}
			for _, v := range sorted(c.Variants) {
				t := c.Variants[v]
				add("  variant %-12s sent %s · failed %s · skipped %s", cut(v, 12), count(t.Sent), count(t.FailedTotal()), count(t.SkippedTotal()))
			}
		}
	}
	if len(s.Flows) > 0 {
		add("")
		add("%-20s %-10s %9s %11s %8s %8s", "FLOW", "STATUS", "SENT/S", "SENT", "FAILED", "SKIPPED")
		for _, id := range sorted(s.Flows) {
			f := s.Flows[id]
			add("%-20s %-10s %9s %11s %8s %8s", cut(id, 20), f.Status, rate(f.SentPerS), count(f.Sent), count(f.FailedTotal()), count(f.SkippedTotal()))
		}
	}
	if status != "" {
		add("")
		add("● %s", status)
	}
	return lines
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
		for _, v := range sorted(c.Variants) {
			t := c.Variants[v]
			fmt.Fprintf(&b, " variant=%s sent=%d failed=%d skipped=%d", v, t.Sent, t.FailedTotal(), t.SkippedTotal())
		}
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

func progress(c daemon.CampaignSnapshot) string {
	if c.Progress == nil {
		return "[" + strings.Repeat("?", barWidth) + "]     -"
	}
	p := min(max(*c.Progress, 0), 1)
	full := int(p*barWidth + 0.5)
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", barWidth-full) + "] " + fmt.Sprintf("%5.1f%%", p*100)
}

// reasons lists the largest counts first: "dead_address 10, rejected 2, +3 more".
func reasons(m map[string]int64, top int) string {
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
	for i, e := range list {
		if i == top {
			parts = append(parts, fmt.Sprintf("+%d more", len(list)-top))
			break
		}
		parts = append(parts, e.k+" "+count(e.v))
	}
	return strings.Join(parts, ", ")
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
