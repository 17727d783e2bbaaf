package ffmpeg

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// Stdin is the hub fed from standard input too (`ffmpeg ... |
// ffmpeg-exporter --stdin`): when the input ends and the linger is over,
// Run ends, and with it the ffmpeg port, but nothing else.
type Stdin struct {
	*Hub
	Stream string        // the stream the input feeds
	Linger time.Duration // how long to keep serving after the input ends
	File   *os.File      // nil: os.Stdin
}

// Run prunes the hub and follows the input, then lingers, until ctx ends.
func (s *Stdin) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	pruned := make(chan struct{})
	go func() { s.Hub.Run(ctx); close(pruned) }()
	defer func() { cancel(); <-pruned }()

	in := s.File
	if in == nil {
		in = os.Stdin
	}
	var peer Peer // the writer of the pipe, when the input is one: energy per encode follows it
	peer.Pipe, _ = procfs.PipeInode(in)
	r, restore, err := closable(in)
	if err == nil {
		err = s.Follow(ctx, r, s.Stream, peer)
		r.Close()
		restore()
	}
	if ctx.Err() != nil {
		return
	}
	s.log().Info("stdin ended; ending the ffmpeg source after --stdin.linger", "stream", s.Stream, "linger", s.Linger, "err", err)
	select {
	case <-time.After(s.Linger):
	case <-ctx.Done():
	}
}

func (h *Hub) log() *slog.Logger {
	if h.cfg.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.cfg.Log
}

// closable returns a copy of f's descriptor in non-blocking mode, so that
// closing the copy ends a read blocked on it at shutdown (a blocking
// descriptor would keep the reader, and the process, until the writer
// closes). The mode belongs to the open file description, which a terminal
// shares with the shell, so restore puts it back; f stays open.
func closable(f *os.File) (r *os.File, restore func(), err error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var (
		dup         int
		wasBlocking bool
	)
	if cerr := raw.Control(func(fd uintptr) {
		var flags int
		if flags, err = fcntl(int(fd), syscall.F_GETFL, 0); err != nil {
			return
		}
		wasBlocking = flags&syscall.O_NONBLOCK == 0
		if dup, err = fcntl(int(fd), syscall.F_DUPFD_CLOEXEC, 0); err != nil {
			return
		}
		if err = syscall.SetNonblock(dup, true); err != nil {
			syscall.Close(dup)
		}
	}); cerr != nil {
		return nil, nil, cerr
	}
	if err != nil {
		return nil, nil, err
	}
	restore = func() {
		if wasBlocking {
			_ = raw.Control(func(fd uintptr) { _ = syscall.SetNonblock(int(fd), false) })
		}
	}
	// Made non-blocking first, so that the runtime poller watches it.
	return os.NewFile(uintptr(dup), f.Name()), restore, nil
}

func fcntl(fd, cmd, arg int) (int, error) {
	v, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}
