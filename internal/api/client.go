package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Client talks to bangerd. The zero value is ready to use and dials the
// default socket (see DefaultSocket). A Client must not be copied after
// first use.
type Client struct {
	// Socket is the unix socket path; "" means DefaultSocket().
	Socket string
	// Dial, when set, replaces dialing Socket (tests use it to plug in
	// pipes or a socket elsewhere).
	Dial func(ctx context.Context) (net.Conn, error)

	once sync.Once
	hc   *http.Client
}

// DialError reports that the daemon socket could not be reached. It
// matches ErrUnavailable with errors.Is.
type DialError struct {
	Socket string
	Err    error
}

// Error says what failed and what to do about it.
func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach bangerd at %s: %v (is bangerd running? try `banger daemon status`)", e.Socket, e.Err)
}

// Unwrap returns the dial error.
func (e *DialError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *DialError) Is(target error) bool { return target == ErrUnavailable }

// SocketPath returns the socket the client dials.
func (c *Client) SocketPath() string {
	if c.Socket != "" {
		return c.Socket
	}
	return DefaultSocket()
}

// DialContext opens a raw connection to the daemon.
func (c *Client) DialContext(ctx context.Context) (net.Conn, error) {
	var conn net.Conn
	var err error
	if c.Dial != nil {
		conn, err = c.Dial(ctx)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", c.SocketPath())
	}
	if err != nil {
		return nil, &DialError{Socket: c.SocketPath(), Err: err}
	}
	return conn, nil
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		c.hc = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return c.DialContext(ctx)
			},
			DisableCompression: true,
			MaxIdleConns:       4,
		}}
	})
	return c.hc
}

// HeaderCaller is the header naming the program and tool behind a
// request (such as "mcp vm_exec"), so the daemon's log says who asked for
// what.
const HeaderCaller = "X-Banger-Caller"

type callerKey struct{}

// WithCaller returns a context whose requests carry caller in
// HeaderCaller.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// stampCaller copies the context's caller, if any, onto req.
func stampCaller(req *http.Request) {
	if c, ok := req.Context().Value(callerKey{}).(string); ok && c != "" {
		req.Header.Set(HeaderCaller, c)
	}
}

// newRequest builds a request for path (which may carry a query) with in
// as its JSON body when non-nil.
func newRequest(ctx context.Context, method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+defaultDaemonAddress+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", ContentTypeJSON)
	}
	stampCaller(req)
	return req, nil
}

// Stream sends a request and returns the response body of a successful
// (2xx) response for the caller to read and close. A failed response is
// returned as an *Error.
func (c *Client) Stream(ctx context.Context, method, path string, in any) (io.ReadCloser, error) {
	req, err := newRequest(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			return nil, de
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, ReadError(resp)
	}
	return resp.Body, nil
}

// Do sends in (nil for no body) as JSON and decodes the JSON response into
// out (nil to discard it).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	body, err := c.Stream(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, body)
		return nil
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// ReadError rebuilds the *Error carried by a failed response. Bodies that
// are not an Error (a proxy, a panic) keep their text and take the code of
// the status.
func ReadError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	var e Error
	if err := json.Unmarshal(b, &e); err == nil && e.Code != "" {
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Code: CodeForStatus(resp.StatusCode), Message: msg}
}

// opPath fills the {id} of an operation path.
func opPath(pattern, id string) string {
	return strings.Replace(pattern, "{id}", url.PathEscape(id), 1)
}

// Version returns the running daemon's build.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	err := c.Do(ctx, http.MethodGet, PathVersion, nil, &v)
	return v, err
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.Do(ctx, http.MethodGet, PathStatus, nil, &s)
	return s, err
}

// StopDaemon asks the daemon to shut down gracefully. It returns once the
// daemon has accepted; the process exits shortly after.
func (c *Client) StopDaemon(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, PathDaemonStop, nil, nil)
}

// DaemonLogs returns the daemon's log file (JSON lines). With follow the
// stream stays open and carries new lines until ctx ends.
func (c *Client) DaemonLogs(ctx context.Context, follow bool) (io.ReadCloser, error) {
	p := PathDaemonLogs
	if follow {
		p += "?follow=1"
	}
	return c.Stream(ctx, http.MethodGet, p, nil)
}

// Operations lists the operations the daemon knows (running and recently
// finished).
func (c *Client) Operations(ctx context.Context) ([]Operation, error) {
	var ops []Operation
	err := c.Do(ctx, http.MethodGet, PathOperations, nil, &ops)
	return ops, err
}

// Operation returns a snapshot of one operation.
func (c *Client) Operation(ctx context.Context, id string) (Operation, error) {
	var op Operation
	err := c.Do(ctx, http.MethodGet, opPath(PathOperation, id), nil, &op)
	return op, err
}

// CancelOperation asks the daemon to cancel an operation; it rolls back
// and its event stream ends with a done event.
func (c *Client) CancelOperation(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, opPath(PathOperationCancel, id), nil, nil)
}

// OperationEvents opens an operation's event stream: every past event,
// then live ones, ending after the done event.
func (c *Client) OperationEvents(ctx context.Context, id string) (*EventReader, error) {
	body, err := c.Stream(ctx, http.MethodGet, opPath(PathOperationEvents, id), nil)
	if err != nil {
		return nil, err
	}
	return NewEventReader(body), nil
}

// WaitOperation follows an operation's events, calling fn (if not nil) for
// each, until the done event. It returns the done event, and the
// operation's error when it failed or was canceled.
func (c *Client) WaitOperation(ctx context.Context, id string, fn func(Event) error) (Event, error) {
	r, err := c.OperationEvents(ctx, id)
	if err != nil {
		return Event{}, err
	}
	defer r.Close()
	for {
		ev, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return Event{}, fmt.Errorf("follow operation %s: %w", id, ctx.Err())
			}
			return Event{}, fmt.Errorf("follow operation %s: %w", id, err)
		}
		if fn != nil {
			if err := fn(ev); err != nil {
				return ev, err
			}
		}
		if ev.Type == EventDone {
			if ev.Error != nil {
				return ev, ev.Error
			}
			return ev, nil
		}
	}
}

// EventReader decodes a newline-delimited JSON event stream.
type EventReader struct {
	body io.ReadCloser
	dec  *json.Decoder
	done bool
}

// NewEventReader reads events from body, which it closes on Close.
func NewEventReader(body io.ReadCloser) *EventReader {
	return &EventReader{body: body, dec: json.NewDecoder(bufio.NewReader(body))}
}

// Next returns the next event. After the done event it returns io.EOF; a
// stream that ends before its done event gives io.ErrUnexpectedEOF.
func (r *EventReader) Next() (Event, error) {
	if r.done {
		return Event{}, io.EOF
	}
	var ev Event
	if err := r.dec.Decode(&ev); err != nil {
		if errors.Is(err, io.EOF) {
			return Event{}, io.ErrUnexpectedEOF
		}
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	r.done = ev.Type == EventDone
	return ev, nil
}

// Close closes the stream.
func (r *EventReader) Close() error { return r.body.Close() }
