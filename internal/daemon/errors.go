package daemon

import (
	"errors"
	"log/slog"

	"banger/internal/api"
	"banger/internal/store"
)

// codeTable classifies errors from the packages the daemon calls, in
// order; the first match wins. Errors already carrying an api code (see
// api.Errorf) keep it. Add a row for each package sentinel that has an API
// meaning.
var codeTable = []struct {
	target error
	code   api.Code
}{
	{store.ErrNotFound, api.CodeNotFound},
	{store.ErrConflict, api.CodeConflict},
	{store.ErrAmbiguous, api.CodeInvalid},
	{store.ErrInvalid, api.CodeInvalid},
}

// toAPIError turns a handler error into its wire form, keeping the whole
// message.
func toAPIError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return &api.Error{Code: e.Code, Message: err.Error()}
	}
	for _, row := range codeTable {
		if errors.Is(err, row.target) {
			return &api.Error{Code: row.code, Message: err.Error()}
		}
	}
	return api.AsError(err)
}

// levelFor logs client mistakes quietly and daemon failures loudly.
func levelFor(c api.Code) slog.Level {
	switch c {
	case api.CodeInternal:
		return slog.LevelError
	case api.CodeUnavailable:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
