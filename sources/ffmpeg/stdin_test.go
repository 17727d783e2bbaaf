package ffmpeg

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// blockingPipe is a pipe in blocking mode, as a shell gives a pipeline's
// standard input (os.Pipe's is non-blocking already).
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "stdin"), os.NewFile(uintptr(p[1]), "writer")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// nonBlocking reads the mode of f's open file description, which a
// terminal shares with the shell.
func nonBlocking(t *testing.T, f *os.File) bool {
	t.Helper()
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	if cerr := raw.Control(func(fd uintptr) { flags, err = fcntl(int(fd), syscall.F_GETFL, 0) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	return flags&syscall.O_NONBLOCK != 0
}

// runStdin runs s until it ends, which it must by itself or once ctx ends.
func runStdin(ctx context.Context, s *Stdin) <-chan struct{} {
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return done
}

func waitClosed(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Run did not end", what)
	}
}

// TestStdinEndsAfterInputAndLinger: the input feeds the stream, its pipe
// is the peer (energy per encode follows its writer), and Run ends once the
// input has ended and the linger is over, leaving the input's descriptor
// open and in the mode it had.
func TestStdinEndsAfterInputAndLinger(t *testing.T) {
	r, w := blockingPipe(t)
	hub := NewHub(DefaultConfig)
	s := &Stdin{Hub: hub, Stream: "piped", Linger: 10 * time.Millisecond, File: r}
	done := runStdin(context.Background(), s)
	io.WriteString(w, "frame=7\nprogress=end\n")
	w.Close()
	waitClosed(t, done, "input ended")

	st, ok := streamByName(t, hub, "piped")
	if !ok || st.Values[Frames] != 7 {
		t.Fatalf("stream piped = %+v, %v", st, ok)
	}
	fi, err := r.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if want := fi.Sys().(*syscall.Stat_t).Ino; st.Peer.Pipe != want {
		t.Errorf("peer pipe inode %d, want %d", st.Peer.Pipe, want)
	}
	if nonBlocking(t, r) {
		t.Error("the input's description was left non-blocking")
	}
}

// TestStdinEndsOnCancelWhileReading: a read blocked on an input whose
// writer stays open does not hold Run past ctx, and the descriptor is put
// back in blocking mode (a terminal's description is the shell's too).
func TestStdinEndsOnCancelWhileReading(t *testing.T) {
	r, w := blockingPipe(t)
	hub := NewHub(DefaultConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStdin(ctx, &Stdin{Hub: hub, Stream: "piped", Linger: time.Hour, File: r})
	io.WriteString(w, "frame=3\nprogress=continue\n")
	waitFor(t, func() bool { st, _ := streamByName(t, hub, "piped"); return st.Values[Frames] == 3 })
	cancel()
	waitClosed(t, done, "ctx ended")
	if nonBlocking(t, r) {
		t.Error("the input's description was left non-blocking")
	}
	if _, err := r.Stat(); err != nil {
		t.Errorf("the input itself was closed: %v", err)
	}
}
