package procfs

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// TCPConn is a TCP connection as its server sees it: our local address
// and the client's (remote) one.
type TCPConn struct {
	Local, Remote netip.AddrPort
}

// ClientInodes finds the socket inode of the client's end of each
// connection in net/tcp and net/tcp6: the socket whose local address is the
// connection's remote one and whose remote address is its local one, as
// `ss` pairs them. A connection whose client end is not in this network
// namespace's tables (another host, another namespace, already closed) is
// left out. The tables are those of the reader's network namespace, even
// under a procfs mounted from elsewhere.
func (f *FS) ClientInodes(conns []TCPConn) (map[TCPConn]uint64, error) {
	want := make(map[TCPConn]TCPConn, len(conns)) // the client end's (local, remote) → the connection
	for _, c := range conns {
		want[TCPConn{Local: unmap(c.Remote), Remote: unmap(c.Local)}] = c
	}
	found := make(map[TCPConn]uint64, len(conns))
	for _, table := range []string{"net/tcp", "net/tcp6"} {
		file, err := os.Open(filepath.Join(f.root, table))
		if errors.Is(err, fs.ErrNotExist) && table == "net/tcp6" {
			continue // a kernel without IPv6
		}
		if err != nil {
			return found, err
		}
		err = scanTCP(file, want, found)
		file.Close()
		if err != nil {
			return found, fmt.Errorf("%s: %w", file.Name(), err)
		}
	}
	return found, nil
}

// scanTCP reads one net/tcp table, recording the inode of every socket
// that want names.
func scanTCP(r io.Reader, want map[TCPConn]TCPConn, found map[TCPConn]uint64) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return fmt.Errorf("line %q: %d fields, want at least 10", sc.Text(), len(f))
		}
		local, err1 := parseHexAddrPort(f[1])
		remote, err2 := parseHexAddrPort(f[2])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		c, ok := want[TCPConn{Local: local, Remote: remote}]
		if !ok {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return fmt.Errorf("line %q: inode: %w", sc.Text(), err)
		}
		if inode != 0 { // 0: a socket in TIME_WAIT, which no process holds
			found[c] = inode
		}
	}
	return sc.Err()
}

// parseHexAddrPort parses an address as net/tcp prints it: the address's
// 32-bit words in the host's byte order, in hex, then ':' and the port in
// hex. IPv4-mapped IPv6 addresses come back as IPv4.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad port", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: want 8 or 32 hex digits", s)
	}
	for i := 0; i < len(raw); i += 4 { // each word was printed as a host-order integer
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Target is an open file as /proc/PID/fd/N links name it: "socket:[INODE]"
// or "pipe:[INODE]".
type Target string

// Socket and Pipe name the socket or pipe with the given inode.
func Socket(inode uint64) Target { return Target("socket:[" + strconv.FormatUint(inode, 10) + "]") }
func Pipe(inode uint64) Target   { return Target("pipe:[" + strconv.FormatUint(inode, 10) + "]") }

// Holders is what a scan of every process's descriptors found.
type Holders struct {
	// Found lists, for each target, the processes holding it (for a pipe,
	// those holding it open for writing).
	Found map[Target][]Process
	// Denied counts the processes whose descriptors could not be read:
	// another user's, without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE.
	Denied int
}

// FindHolders looks through every process's descriptors for the targets,
// as `ss -p` and `lsof` do. A pipe counts only where it is open for
// writing, so the reader (this exporter, for --stdin) is not its holder.
// It costs a readlink per open descriptor on the machine: call it once for
// all the targets wanted.
func (f *FS) FindHolders(targets map[Target]bool) (Holders, error) {
	h := Holders{Found: map[Target][]Process{}}
	dir, err := os.Open(f.root)
	if err != nil {
		return h, err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return h, err
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue // not a process
		}
		denied, err := f.scanProcess(pid, targets, &h)
		if denied {
			h.Denied++
		}
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

// scanProcess records the targets process pid holds. A process that is
// gone is skipped; one whose descriptors are not ours to read is denied.
func (f *FS) scanProcess(pid int, targets map[Target]bool, h *Holders) (denied bool, err error) {
	fdDir := filepath.Join(f.root, strconv.Itoa(pid), "fd")
	dir, err := os.Open(fdDir)
	if err != nil {
		return errors.Is(err, fs.ErrPermission), nil
	}
	fds, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return errors.Is(err, fs.ErrPermission), nil
	}
	var held []Target
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd))
		if errors.Is(err, fs.ErrPermission) {
			return true, nil // listing needs CAP_DAC_READ_SEARCH, reading links CAP_SYS_PTRACE
		}
		t := Target(link)
		if err != nil || !targets[t] {
			continue
		}
		if strings.HasPrefix(link, "pipe:") && !f.writable(pid, fd) {
			continue
		}
		held = append(held, t)
	}
	if len(held) == 0 {
		return false, nil
	}
	st, err := f.Stat(pid)
	if errors.Is(err, ErrNoProcess) {
		return false, nil // it exited meanwhile
	}
	if err != nil {
		return false, err
	}
	for _, t := range held {
		if ps := h.Found[t]; len(ps) == 0 || ps[len(ps)-1] != st.Process { // a target held twice by one process counts once
			h.Found[t] = append(ps, st.Process)
		}
	}
	return false, nil
}

// writable reports whether descriptor fd of pid is open for writing, from
// the access mode in /proc/PID/fdinfo/FD's flags (octal).
func (f *FS) writable(pid int, fd string) bool {
	var buf [256]byte
	b, err := f.read(filepath.Join(f.root, strconv.Itoa(pid), "fdinfo", fd), buf[:])
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY
		}
	}
	return false
}

// PipeInode returns the inode of the pipe file is, if it is one: what
// /proc/PID/fd links of the processes at its other end name.
func PipeInode(file *os.File) (uint64, bool) {
	fi, err := file.Stat()
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}
