// Package wait has the one polling loop banger uses wherever it must wait
// for a condition it cannot be told about (a process to exit, a socket to
// appear, a guest to answer). Standard library only.
package wait

import (
	"context"
	"time"
)

// Until calls fn at once and then every interval until fn reports done,
// returns an error, or ctx ends. It returns fn's error, or ctx's error
// when the context ended first (fn is not called again after that).
func Until(ctx context.Context, every time.Duration, fn func() (done bool, err error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done, err := fn()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
