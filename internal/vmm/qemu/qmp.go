package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// qmpConn is a minimal QMP client: the greeting, capabilities negotiation
// and synchronous commands. Asynchronous events are skipped.
type qmpConn struct {
	conn net.Conn
	dec  *json.Decoder
}

// qmpError is an error reply from QEMU.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// dialQMP connects to the QMP socket at path and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	q := &qmpConn{conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	q.deadline(ctx)
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting on %s: %v", path, errors.Join(err, errors.New("no QMP greeting")))
	}
	if _, err := q.execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp capabilities on %s: %w", path, err)
	}
	return q, nil
}

func (q *qmpConn) deadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	_ = q.conn.SetDeadline(dl)
}

// execute runs one command and returns its "return" value.
func (q *qmpConn) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return q.executeWithFile(ctx, cmd, args, nil)
}

// executeWithFile runs one command; when f is not nil its descriptor
// travels with the command as SCM_RIGHTS ancillary data, which is how
// getfd hands QEMU a file it could not open itself under -sandbox.
func (q *qmpConn) executeWithFile(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	q.deadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	if f != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("qmp %s: passing a file needs a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
			Event  string          `json:"event"`
		}
		if err := q.dec.Decode(&resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %w", cmd, resp.Error)
		default:
			return resp.Return, nil
		}
	}
}

// waitEvent reads until an asynchronous event named name arrives whose
// data match accepts, or ctx ends. Only events are expected: it must not
// run while a command is in flight.
func (q *qmpConn) waitEvent(ctx context.Context, name string, match func(json.RawMessage) bool) error {
	q.deadline(ctx)
	for {
		var msg struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := q.dec.Decode(&msg); err != nil {
			return fmt.Errorf("wait for qmp event %s: %w", name, err)
		}
		if msg.Event == name && match(msg.Data) {
			return nil
		}
	}
}

// status returns the VM run state from query-status ("running", ...).
func (q *qmpConn) status(ctx context.Context) (string, error) {
	raw, err := q.execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

func (q *qmpConn) Close() error { return q.conn.Close() }
