package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	prom "github.com/prometheus/procfs"
)

// TCPConn is a TCP connection as its server sees it: our local address
// and the client's (remote) one.
type TCPConn struct {
	Local, Remote netip.AddrPort
}

// ClientInodes finds the socket inode of the client's end of each
// connection in net/tcp and net/tcp6: the socket whose local address is the
// connection's remote one and whose remote address is its local one, as
// `ss` pairs them. It looks in the reader's network namespace first (its
// tables, even under a procfs mounted from elsewhere), then, for what is
// still missing, in every other network namespace the procfs shows (each
// through one of its processes' /proc/PID/net): a container on a bridge
// network connects from its own. A connection whose client end is in no
// table (another host, already closed) is left out.
func (f *FS) ClientInodes(conns []TCPConn) (map[TCPConn]uint64, error) {
	want := make(map[TCPConn]TCPConn, len(conns)) // the client end's (local, remote) → the connection
	for _, c := range conns {
		want[TCPConn{Local: unmap(c.Remote), Remote: unmap(c.Local)}] = c
	}
	found := make(map[TCPConn]uint64, len(conns))
	err := scanTables(f.fs, f.root, want, found)
	if err != nil || len(found) == len(want) {
		return found, err
	}
	// Other namespaces: one process of each, its tables.
	self, _ := os.Readlink(filepath.Join(f.root, "self", "ns", "net"))
	seen := map[string]bool{self: true}
	procs, err := f.fs.AllProcs()
	if err != nil {
		return found, err
	}
	for _, p := range procs {
		dir := filepath.Join(f.root, strconv.Itoa(p.PID))
		ns, err := os.Readlink(filepath.Join(dir, "ns", "net"))
		if err != nil || seen[ns] {
			continue // gone, or not ours to read
		}
		seen[ns] = true
		pfs, err := prom.NewFS(dir)
		if err != nil {
			continue
		}
		if scanTables(pfs, dir, want, found) == nil && len(found) == len(want) {
			break
		}
	}
	return found, nil
}

// scanTables looks for the wanted client ends in one namespace's tables.
func scanTables(pfs prom.FS, root string, want map[TCPConn]TCPConn, found map[TCPConn]uint64) error {
	for _, table := range []struct {
		name string
		read func() (prom.NetTCP, error)
	}{{"net/tcp", pfs.NetTCP}, {"net/tcp6", pfs.NetTCP6}} {
		sockets, err := table.read()
		if errors.Is(err, fs.ErrNotExist) && table.name == "net/tcp6" {
			continue // a kernel without IPv6
		}
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(root, table.name), err)
		}
		for _, s := range sockets {
			c, ok := want[TCPConn{Local: addrPort(s.LocalAddr, s.LocalPort), Remote: addrPort(s.RemAddr, s.RemPort)}]
			if ok && s.Inode != 0 { // 0: a socket in TIME_WAIT, which no process holds
				found[c] = s.Inode
			}
		}
	}
	return nil
}

// addrPort is an address of the TCP tables; IPv4-mapped IPv6 addresses
// (a dual-stack listener's) come back as IPv4.
func addrPort(ip net.IP, port uint64) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
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
	// those holding it open for writing). Callers that shared a scan share
	// these slices: read them, do not change them.
	Found map[Target][]Process
	// Denied counts the processes whose descriptors could not be read:
	// another user's, without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE.
	Denied int
}

// FindHolders looks through every process's descriptors for the targets,
// as `ss -p` and `lsof` do. A pipe counts only where it is open for
// writing, so the reader (this exporter, for --stdin) is not its holder.
// It costs a readlink per open descriptor on the machine: ask once for all
// the targets wanted. Callers asking while a scan runs share the next one,
// which looks for all their targets: every answer comes from a scan that
// began after its call.
func (f *FS) FindHolders(targets map[Target]bool) (Holders, error) {
	return f.scan.find(targets, f.findHolders)
}

// findHolders is one scan of every process's descriptors.
func (f *FS) findHolders(targets map[Target]bool) (Holders, error) {
	h := Holders{Found: map[Target][]Process{}}
	procs, err := f.fs.AllProcs()
	if err != nil {
		return h, err
	}
	for _, p := range procs {
		if p.PID <= 0 {
			continue
		}
		denied, err := f.scanProcess(p, targets, &h)
		if denied {
			h.Denied++
		}
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

// scanProcess records the targets process p holds. A process that is gone
// is skipped; one whose descriptors are not ours to read is denied.
func (f *FS) scanProcess(p prom.Proc, targets map[Target]bool, h *Holders) (denied bool, err error) {
	fds, err := p.FileDescriptors()
	if err != nil {
		return errors.Is(err, fs.ErrPermission), nil
	}
	fdDir := filepath.Join(f.root, strconv.Itoa(p.PID), "fd")
	var held []Target
	for _, fd := range fds {
		name := strconv.FormatUint(uint64(fd), 10)
		link, err := os.Readlink(filepath.Join(fdDir, name))
		if errors.Is(err, fs.ErrPermission) {
			return true, nil // listing needs CAP_DAC_READ_SEARCH, reading links CAP_SYS_PTRACE
		}
		t := Target(link)
		if err != nil || !targets[t] {
			continue
		}
		if strings.HasPrefix(link, "pipe:") && !writable(p, name) {
			continue
		}
		held = append(held, t)
	}
	if len(held) == 0 {
		return false, nil
	}
	st, err := f.Stat(p.PID)
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

// writable reports whether descriptor fd of p is open for writing, from
// the access mode in its fdinfo's flags (octal).
func writable(p prom.Proc, fd string) bool {
	info, err := p.FDInfo(fd)
	if err != nil {
		return false
	}
	flags, err := strconv.ParseUint(info.Flags, 8, 64)
	return err == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY
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
