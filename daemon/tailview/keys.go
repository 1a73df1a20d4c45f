package tailview

import "io"

// WatchKeys reads key presses from r (a terminal in raw mode) until quit
// is asked for or r ends: q, Q, Esc, or Ctrl-C / Ctrl-D, which raw mode
// delivers as bytes instead of signals. It returns whether a quit key was
// read.
func WatchKeys(r io.Reader, quit func()) bool {
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case 'q', 'Q', 0x1b, 0x03, 0x04:
				quit()
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}
