package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
)

// logPoll is how often a followed log is checked for new lines.
const logPoll = 200 * time.Millisecond

func (d *Daemon) daemonRoutes() []Route {
	return []Route{
		{"GET " + api.PathVersion, d.handleVersion},
		{"GET " + api.PathStatus, d.handleStatus},
		{"POST " + api.PathDaemonStop, d.handleStop},
		{"GET " + api.PathDaemonLogs, d.handleLogs},
	}
}

func (d *Daemon) handleVersion(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, api.VersionInfo{
		Version:    buildinfo.Version(),
		BuildStamp: buildinfo.BuildStamp(),
		PID:        os.Getpid(),
	})
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := d.status(r.Context())
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return writeJSON(w, http.StatusOK, st)
}

// handleStop answers, then starts the graceful shutdown.
func (d *Daemon) handleStop(w http.ResponseWriter, r *http.Request) error {
	d.Logger.Info("stop requested over the API")
	if err := writeJSON(w, http.StatusAccepted, struct{}{}); err != nil {
		return err
	}
	_ = flush(w)
	d.Stop()
	return nil
}

// handleLogs sends the log file; with ?follow=1 it then sends new lines
// as they are written until the client leaves or the daemon stops.
func (d *Daemon) handleLogs(w http.ResponseWriter, r *http.Request) error {
	follow := r.URL.Query().Get("follow")
	following := follow == "1" || follow == "true"
	f, err := os.Open(d.Paths.LogFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return api.Errorf(api.CodeNotFound, "daemon log %s: %w", d.Paths.LogFile, err)
		}
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer f.Close()
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	br := bufio.NewReader(f)
	ctx := r.Context()
	for {
		// Send whole lines only, so a follower never sees half a record.
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 && err == nil {
				if _, werr := w.Write(line); werr != nil {
					return nil // client gone
				}
				continue
			}
			if len(line) > 0 {
				// Partial line: rewind it and wait for the rest.
				if _, serr := f.Seek(-int64(len(line)+br.Buffered()), io.SeekCurrent); serr != nil {
					return fmt.Errorf("seek daemon log: %w", serr)
				}
				br.Reset(f)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read daemon log: %w", err)
			}
			break
		}
		if !following {
			return nil
		}
		if err := flush(w); err != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(logPoll):
		}
	}
}
