package nspawn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrExitedEarly is returned by NotifySocket.WaitReady when nspawn exited
// before the container was ready.
var ErrExitedEarly = errors.New("systemd-nspawn exited before the container was ready")

// NotifySocket is the socket systemd-nspawn --notify-ready=yes reports a
// container's readiness on: pass Addr as NOTIFY_SOCKET in nspawn's
// environment, then WaitReady. Start uses one; so does the benchmark's bare
// nspawn floor, to wait the same way.
type NotifySocket struct {
	conn *net.UnixConn
	addr string
}

// ListenNotify opens a notify socket in the abstract namespace (no file to
// clean up, no path length limit) that receives the sender's credentials
// with every message. The caller closes it once WaitReady has returned.
func ListenNotify() (*NotifySocket, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	addr := "@racker-nspawn/" + hex.EncodeToString(rnd[:])
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("creating notify socket: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("creating notify socket: %w", err)
	}
	return &NotifySocket{conn: conn, addr: addr}, nil
}

// Addr is the socket's address, the value of NOTIFY_SOCKET.
func (n *NotifySocket) Addr() string { return n.addr }

// Close closes the socket.
func (n *NotifySocket) Close() error { return n.conn.Close() }

// WaitReady waits for READY=1 from systemd-nspawn (pid) and returns the
// container's leader pid from X_NSPAWN_LEADER_PID; messages from other
// senders are ignored. It fails with ErrExitedEarly once exited is closed,
// with ErrBootTimeout (wrapped) after timeout, and with ctx.Err() when ctx
// ends first.
func (n *NotifySocket) WaitReady(ctx context.Context, pid int, exited <-chan struct{}, timeout time.Duration) (int, error) {
	type message struct {
		text string
		err  error
	}
	msgs := make(chan message)
	done := make(chan struct{})
	defer close(done)
	go func() {
		// Ends when the caller closes the socket.
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		for {
			var msg message
			nb, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
			if err != nil {
				msg.err = err
			} else if senderPID(oob[:oobn]) != pid {
				continue
			} else {
				msg.text = string(buf[:nb])
			}
			select {
			case msgs <- msg:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	leader := 0
	for {
		select {
		case msg := <-msgs:
			if msg.err != nil {
				return 0, fmt.Errorf("reading notify socket: %w", msg.err)
			}
			for _, line := range strings.Split(msg.text, "\n") {
				if v, ok := strings.CutPrefix(line, "X_NSPAWN_LEADER_PID="); ok {
					leader, _ = strconv.Atoi(v)
				}
				if line == "READY=1" {
					if leader <= 0 {
						return 0, errors.New("nspawn sent READY=1 without X_NSPAWN_LEADER_PID")
					}
					return leader, nil
				}
			}
		case <-exited:
			return 0, ErrExitedEarly
		case <-timer.C:
			return 0, fmt.Errorf("%w: no READY=1 within %s", ErrBootTimeout, timeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// senderPID returns the pid in the SCM_CREDENTIALS of a message, or 0.
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, msg := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msg); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}
