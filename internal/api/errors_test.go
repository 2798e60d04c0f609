package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestError_CodesRoundTripThroughJSON(t *testing.T) {
	cause := errors.New("no such file")
	for _, tc := range []struct {
		err    error
		want   *Error
		status int
	}{
		{Errorf(CodeNotFound, "vm %q not found", "web"), ErrNotFound, 404},
		{Errorf(CodeInvalid, "bad name: %w", cause), ErrInvalid, 400},
		{Errorf(CodeConflict, "name taken"), ErrConflict, 409},
		{Errorf(CodeUnavailable, "qemu missing"), ErrUnavailable, 503},
		{fmt.Errorf("boot: %w", context.Canceled), ErrCanceled, 499},
		{Errorf(CodeNotImplemented, "later"), ErrNotImplemented, 501},
		{errors.New("plain"), ErrInternal, 500},
	} {
		t.Run(string(tc.want.Code), func(t *testing.T) {
			wire := AsError(tc.err)
			if wire.Code.HTTPStatus() != tc.status {
				t.Errorf("status %d, want %d", wire.Code.HTTPStatus(), tc.status)
			}
			b, err := json.Marshal(wire)
			if err != nil {
				t.Fatal(err)
			}
			resp := &http.Response{StatusCode: tc.status, Status: http.StatusText(tc.status), Body: io.NopCloser(strings.NewReader(string(b)))}
			got := ReadError(resp)
			if !errors.Is(got, tc.want) {
				t.Errorf("rebuilt %v (%s), want code %s", got, b, tc.want.Code)
			}
			if got.Error() != tc.err.Error() {
				t.Errorf("message %q, want %q", got.Error(), tc.err.Error())
			}
			for _, other := range []*Error{ErrNotFound, ErrInvalid, ErrConflict, ErrUnavailable, ErrCanceled, ErrNotImplemented, ErrInternal} {
				if other != tc.want && errors.Is(got, other) {
					t.Errorf("%v also matches %s", got, other.Code)
				}
			}
		})
	}
}

func TestErrorf_KeepsCauseOnThisSide(t *testing.T) {
	cause := errors.New("disk full")
	err := Errorf(CodeUnavailable, "write overlay: %w", cause)
	if !errors.Is(err, cause) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Errorf lost the cause or the code: %v", err)
	}
	if WithCode(CodeInvalid, nil) != nil {
		t.Error("WithCode(nil) != nil")
	}
}

func TestReadError_NonJSONBody(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   *Error
		msg    string
	}{
		{404, "404 page not found\n", ErrNotFound, "404 page not found"},
		{405, "Method Not Allowed", ErrInvalid, "Method Not Allowed"},
		{502, "", ErrInternal, "502 Bad Gateway"},
	} {
		resp := &http.Response{StatusCode: tc.status, Status: fmt.Sprintf("%d %s", tc.status, http.StatusText(tc.status)), Body: io.NopCloser(strings.NewReader(tc.body))}
		err := ReadError(resp)
		if !errors.Is(err, tc.want) || err.Error() != tc.msg {
			t.Errorf("ReadError(%d, %q) = %v (%s), want %s %q", tc.status, tc.body, err, CodeOf(err), tc.want.Code, tc.msg)
		}
	}
}

func TestIsUpgrade(t *testing.T) {
	for _, tc := range []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", "banger-stream", true},
		{"keep-alive, upgrade", "Banger-Stream", true},
		{"close", "banger-stream", false},
		{"Upgrade", "websocket", false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://bangerd/x", nil)
		r.Header.Set("Connection", tc.conn)
		r.Header.Set("Upgrade", tc.upgrade)
		if got := IsUpgrade(r); got != tc.want {
			t.Errorf("IsUpgrade(%q, %q) = %v, want %v", tc.conn, tc.upgrade, got, tc.want)
		}
	}
}
