package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an error so that the CLI can react to it after it has
// crossed the socket.
type Code string

// Error codes and the HTTP status each one travels with.
const (
	CodeNotFound       Code = "not_found"       // 404: no such VM, image, operation, endpoint
	CodeInvalid        Code = "invalid"         // 400: the request is malformed or violates a rule
	CodeConflict       Code = "conflict"        // 409: the target is in the wrong state or the name is taken
	CodeUnavailable    Code = "unavailable"     // 503: a dependency (host tool, daemon, guest) cannot serve now
	CodeCanceled       Code = "canceled"        // 499: the work was canceled by the caller
	CodeNotImplemented Code = "not_implemented" // 501: the endpoint exists but does nothing yet
	CodeInternal       Code = "internal"        // 500: a bug or an unexpected host failure
)

// StatusCanceled is the HTTP status for CodeCanceled ("client closed
// request", as nginx spells it).
const StatusCanceled = 499

var codeStatus = map[Code]int{
	CodeNotFound:       http.StatusNotFound,
	CodeInvalid:        http.StatusBadRequest,
	CodeConflict:       http.StatusConflict,
	CodeUnavailable:    http.StatusServiceUnavailable,
	CodeCanceled:       StatusCanceled,
	CodeNotImplemented: http.StatusNotImplemented,
	CodeInternal:       http.StatusInternalServerError,
}

// HTTPStatus returns the status code that carries c; unknown codes are
// internal errors.
func (c Code) HTTPStatus() int {
	if s, ok := codeStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForStatus maps an HTTP status back to a code, for responses whose
// body carries none.
func CodeForStatus(status int) Code {
	for c, s := range codeStatus {
		if s == status {
			return c
		}
	}
	if status >= 400 && status < 500 {
		return CodeInvalid
	}
	return CodeInternal
}

// Error is an error with a Code. It is the JSON body of every failed
// response and of a failed operation. On the daemon side it may wrap a
// cause (kept for errors.Is/As, never sent); on the client side it is
// rebuilt from the body so errors.Is(err, ErrNotFound) works.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	cause   error
}

// Sentinels for errors.Is: any *Error matches the sentinel of its code.
var (
	ErrNotFound       = &Error{Code: CodeNotFound, Message: "not found"}
	ErrInvalid        = &Error{Code: CodeInvalid, Message: "invalid request"}
	ErrConflict       = &Error{Code: CodeConflict, Message: "conflict"}
	ErrUnavailable    = &Error{Code: CodeUnavailable, Message: "unavailable"}
	ErrCanceled       = &Error{Code: CodeCanceled, Message: "canceled"}
	ErrNotImplemented = &Error{Code: CodeNotImplemented, Message: "not implemented"}
	ErrInternal       = &Error{Code: CodeInternal, Message: "internal error"}
)

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the daemon-side cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is an *Error with the same code; this is what
// makes errors.Is(err, ErrNotFound) work for every not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns an *Error with code c. The format may use %w; the wrapped
// error stays reachable with errors.Is/As on this side of the socket.
func Errorf(c Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: c, Message: err.Error(), cause: errors.Unwrap(err)}
}

// WithCode returns err classified as c, keeping err as the cause. A nil
// err stays nil.
func WithCode(c Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: c, Message: err.Error(), cause: err}
}

// CodeOf classifies err: the code of the first *Error in its chain; a
// canceled context is CodeCanceled and a deadline CodeUnavailable;
// everything else is CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeUnavailable
	}
	return CodeInternal
}

// AsError converts any error to its wire form: code from CodeOf and the
// full message of err (with every wrap). A nil err gives nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: CodeOf(err), Message: err.Error()}
}
