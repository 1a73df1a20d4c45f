package tailview

import (
	"fmt"
	"io"

	"github.com/notifyd/notifyd/daemon"
)

// View is the output side of `notifyd tail`.
type View struct {
	out io.Writer
	// terminal: redraw in place; otherwise one line per snapshot.
	terminal bool
	width    func() int
	last     *daemon.Snapshot
	status   string
	started  bool
}

// NewView returns a view writing to out. width reports the terminal's
// width (nil: 120 cells); it is asked per frame so a resize takes effect.
func NewView(out io.Writer, terminal bool, width func() int) *View {
	if width == nil {
		width = func() int { return 120 }
	}
	return &View{out: out, terminal: terminal, width: width}
}

// Snapshot shows one snapshot.
func (v *View) Snapshot(s *daemon.Snapshot) error {
	v.last = s
	if !v.terminal {
		_, err := fmt.Fprintln(v.out, Line(s))
		return err
	}
	return v.draw()
}

// Status shows a connection state ("" when connected).
func (v *View) Status(msg string) {
	v.status = msg
	switch {
	case msg == "":
	case !v.terminal:
		fmt.Fprintln(v.out, "# "+msg)
	case v.last == nil:
		_ = v.start()
		_ = WriteScreen(v.out, []string{"notifyd live", "", "● " + msg})
	default:
		_ = v.draw()
	}
}

// Close restores the terminal and leaves the last snapshot as one line, so
// the scrollback keeps how the send stood when the operator quit.
func (v *View) Close() error {
	if !v.terminal || !v.started {
		return nil
	}
	if _, err := io.WriteString(v.out, leaveScreen); err != nil {
		return err
	}
	if v.last != nil {
		_, err := fmt.Fprintln(v.out, Line(v.last))
		return err
	}
	return nil
}

func (v *View) start() error {
	if v.started {
		return nil
	}
	v.started = true
	_, err := io.WriteString(v.out, enterScreen)
	return err
}

func (v *View) draw() error {
	if err := v.start(); err != nil {
		return err
	}
	return WriteScreen(v.out, Screen(v.last, v.width(), v.status))
}
