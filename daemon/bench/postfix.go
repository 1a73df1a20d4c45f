package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// postfixDomains are the recipient domains the generated shard uses (see
// store/shard/shardgen) plus the reference's: the private Postfix delivers
// every one of them to one Maildir.
var postfixDomains = []string{"gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "mail.ru", "qq.com",
	"proton.me", "example.com", "gmx.de", "example.org"}

// postfixInstance is a private, loopback-only Postfix: its own config
// directory, queue and Maildir under one directory on a tmpfs, smtpd on a
// free 127.0.0.1 port, the virtual(8) agent delivering every recipient of
// postfixDomains to one Maildir, and every other destination bounced by the
// error transport (nothing ever leaves the machine). The system's Postfix
// configuration is neither read nor touched.
type postfixInstance struct {
	dir, conf, addr string
	postfix         string
	maildir         string // the Maildir's new/ directory of the current run
	runs            int
}

// tmpfsMagic is statfs's f_type of a tmpfs.
const tmpfsMagic = 0x01021994

// startPostfix sets up and starts the instance in a fresh directory under
// base (a tmpfs, /dev/shm by default). It needs root (master(8) drops to
// the postfix user itself) and Debian's postfix package.
func startPostfix(ctx context.Context, base string) (*postfixInstance, error) {
	bin, ok := lookTool("postfix")
	if !ok {
		return nil, errors.New("postfix not found: apt-get install postfix (Debian; the system instance need not run)")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("--postfix needs root: Postfix's master starts as root and drops to the postfix user")
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("look up the postfix user (installed with the postfix package): %w", err)
	}
	if base == "" {
		base = "/dev/shm"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(base, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", base, err)
	}
	if st.Type != tmpfsMagic {
		return nil, fmt.Errorf("%s is not a tmpfs: the Postfix benchmark keeps its queue and Maildir in memory", base)
	}
	dir, err := os.MkdirTemp(base, "notifyd-bench-postfix-")
	if err != nil {
		return nil, err
	}
	p := &postfixInstance{dir: dir, conf: filepath.Join(dir, "etc"), postfix: bin}
	fail := func(err error) (*postfixInstance, error) {
		p.stop()
		return nil, err
	}
	// Postfix's daemons run as the postfix user and must reach their files.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	p.addr = "127.0.0.1:" + port
	for _, d := range []string{"etc", "spool", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return fail(err)
		}
	}
	for _, d := range []string{"data", "mail"} {
		if err := chownTo(filepath.Join(dir, d), pu); err != nil {
			return fail(err)
		}
	}
	mainCF := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + filepath.Join(dir, "spool"),
		"data_directory = " + filepath.Join(dir, "data"),
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"myhostname = bench.notifyd.test",
		"mydestination =",
		"mynetworks = 127.0.0.0/8",
		"relay_domains =",
		"default_transport = error:notifyd bench: no delivery outside the machine",
		"relay_transport = error:notifyd bench: no delivery outside the machine",
		"smtp_dns_support_level = disabled",
		"smtpd_recipient_restrictions = permit_mynetworks, reject",
		"virtual_mailbox_domains = " + strings.Join(postfixDomains, " "),
		"virtual_mailbox_base = " + filepath.Join(dir, "mail"),
		"virtual_mailbox_maps = static:member/",
		"virtual_uid_maps = static:" + pu.Uid,
		"virtual_gid_maps = static:" + pu.Gid,
		"alias_maps =",
		"alias_database =",
		"biff = no",
		"maillog_file = " + filepath.Join(dir, "maillog"),
		"maillog_file_prefixes = " + dir,
		"",
	}, "\n")
	// No chroot: the queue directory is private and has no copies of the
	// files a chroot needs.
	masterCF := "127.0.0.1:" + port + " inet n - n - - smtpd\n" + `pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	if err := os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(masterCF), 0o644); err != nil {
		return fail(err)
	}
	if out, err := exec.CommandContext(ctx, bin, "-c", p.conf, "start").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("start Postfix (-c %s): %w: %s (log: %s)", p.conf, err, out, tail(p.log(), 600)))
	}
	if err := waitListening(ctx, p.addr, 10*time.Second); err != nil {
		return fail(fmt.Errorf("Postfix smtpd: %w (log: %s)", err, tail(p.log(), 600)))
	}
	return p, nil
}

func chownTo(path string, u *user.User) error {
	var uid, gid int
	if _, err := fmt.Sscan(u.Uid, &uid); err != nil {
		return err
	}
	if _, err := fmt.Sscan(u.Gid, &gid); err != nil {
		return err
	}
	return os.Chown(path, uid, gid)
}

func (p *postfixInstance) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// stop stops the instance (master and its children) and removes it.
func (p *postfixInstance) stop() {
	if _, err := os.Stat(filepath.Join(p.conf, "master.cf")); err == nil {
		pid := 0
		if b, err := os.ReadFile(filepath.Join(p.dir, "spool", "pid", "master.pid")); err == nil {
			_, _ = fmt.Sscan(strings.TrimSpace(string(b)), &pid)
		}
		_ = exec.Command(p.postfix, "-c", p.conf, "stop").Run()
		// master exits a moment after the signal, with its children.
		for deadline := time.Now().Add(10 * time.Second); pid > 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if syscall.Kill(pid, 0) != nil {
				break
			}
		}
	}
	_ = os.RemoveAll(p.dir)
}

// fresh moves the Maildir delivered so far aside: the next run counts its
// own deliveries from zero, and counting stays cheap.
func (p *postfixInstance) fresh() error {
	p.runs++
	cur := filepath.Join(p.dir, "mail", "member")
	if _, err := os.Stat(cur); err == nil {
		if err := os.Rename(cur, filepath.Join(p.dir, "mail", fmt.Sprintf("done-%d", p.runs))); err != nil {
			return err
		}
	}
	p.maildir = filepath.Join(cur, "new")
	return nil
}

// waitDelivered waits until n messages are in the Maildir. It polls from
// one locked OS thread and returns that thread's CPU, which is the
// benchmark's and not the sender's: the caller subtracts it.
func (p *postfixInstance) waitDelivered(ctx context.Context, n int64) (time.Duration, error) {
	type result struct {
		cpu time.Duration
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0 := threadCPU()
		err := p.poll(ctx, n)
		ch <- result{threadCPU() - cpu0, err}
	}()
	r := <-ch
	return r.cpu, r.err
}

func (p *postfixInstance) poll(ctx context.Context, n int64) error {
	const stall = 60 * time.Second
	var last int64
	progress := time.Now()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		got, err := countDir(p.maildir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if got >= n {
			return nil
		}
		if got > last {
			last, progress = got, time.Now()
		} else if time.Since(progress) > stall {
			return fmt.Errorf("Postfix delivered %d of %d messages and nothing more for %s (log: %s)", got, n, stall, tail(p.log(), 600))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func countDir(dir string) (int64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		names, err := f.Readdirnames(4096)
		n += int64(len(names))
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// threadCPU is the calling OS thread's user+system CPU.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func waitListening(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s: %w", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
