package guest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/agent/agentserver"
	"banger/internal/buildinfo"
	"banger/internal/guestcontract"
)

// Main is banger-agent's entry point: `banger-agent [serve]` boots and
// serves (as PID 1 it becomes the init and runs the agent as its child),
// `banger-agent version` prints the version, `banger-agent unit` prints
// the systemd unit, `banger-agent initramfs` is the initramfs's /init
// (RunInitramfs). It returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	out := &logOutput{console: stderr}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, buildinfo.Version())
		return 0
	case "unit":
		fmt.Fprint(stdout, guestcontract.AgentUnit)
		return 0
	case "initramfs":
		// The kernel ran this binary as the initramfs's /init.
		if err := RunInitramfs(); err != nil {
			say("%v", err)
			return 1
		}
		return 0
	case "serve":
		if os.Getpid() == 1 && os.Getenv("BANGER_AGENT_CHILD") == "" {
			if err := RunInit(append([]string{"banger-agent", "serve"}, args...), log); err != nil {
				fmt.Fprintf(stderr, "banger-agent: %v\n", err)
				return 1
			}
			return 0
		}
		if err := serve(ctx, args, log, out); err != nil {
			fmt.Fprintf(stderr, "banger-agent: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "banger-agent: unknown command %q (want serve, version or unit)\n", cmd)
		return 2
	}
}

// serve applies the identity and serves the agent API until ctx ends.
// Under systemd it first adopts the agent /init started, if there is one
// (see EarlyPIDFile), and returns at once when it did.
func serve(ctx context.Context, args []string, log *slog.Logger, out *logOutput) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	noBoot := fs.Bool("no-boot", false, "do not look for the config drive or apply the identity")
	tokenFile := fs.String("token-file", "", "read the bearer token from this file instead of the identity")
	identityFD := fs.Int("identity-fd", -1, "read the identity /init applied from this descriptor (the early agent)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *identityFD < 0 && !*noBoot && os.Getenv("NOTIFY_SOCKET") != "" {
		adopted, err := adoptEarlyAgent(log)
		if adopted {
			return nil
		}
		if err != nil {
			log.Warn("serving without the early agent", "err", err)
		}
	}
	srv := &agentserver.Server{Version: buildinfo.Version(), Logger: log}
	srv.Reidentify = func(req agent.Reidentify) error {
		err := Reidentify("/", req, LinuxSystem{})
		if err == nil {
			srv.SetIdentityEnv(req.Identity.Env)
		}
		log.Info("new identity after restore", "hostname", req.Identity.Hostname, "vm_id", req.Identity.VMID, "err", err)
		return err
	}
	switch {
	case *identityFD >= 0:
		st, err := readEarlyIdentity(*identityFD)
		if err != nil {
			return err
		}
		srv.Token = st.Token
		srv.SetIdentityEnv(st.Env)
		var applyErr error
		if st.Err != "" {
			applyErr = errors.New(st.Err)
		}
		srv.SetIdentityResult(applyErr)
		log.Info("serving the identity /init applied", "hostname", st.Hostname, "vm_id", st.VMID)
		// The unit that adopts this process signals it; from then on
		// the lines belong in the journal, under the unit.
		adopted := make(chan os.Signal, 1)
		signal.Notify(adopted, unix.SIGUSR1)
		go func() {
			for range adopted {
				out.toJournal()
				log.Info("adopted by " + guestcontract.AgentUnitName)
			}
		}()
	case !*noBoot:
		id, err := Boot(ctx, BootConfig{Sys: LinuxSystem{}})
		if err != nil {
			log.Error("identity", "err", err)
		} else {
			log.Info("identity applied", "hostname", id.Hostname, "vm_id", id.VMID)
		}
		srv.Token = id.Token
		srv.SetIdentityEnv(id.Env)
		srv.SetIdentityResult(err)
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read token: %w", err)
		}
		srv.Token = strings.TrimSpace(string(b))
	}
	if srv.Token == "" {
		log.Warn("no token: every request will be refused")
	}
	sessions, err := NewSessionsForGuest(log)
	if err != nil {
		log.Warn("sessions disabled", "err", err)
	} else {
		srv.Sessions = sessions
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := ServeVsock(ctx, srv, guestcontract.AgentVsockPort, log); err != nil {
			log.Error("vsock transport", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := ServeSerial(ctx, srv, guestcontract.AgentSerialPort, log); err != nil {
			log.Error("serial transport", "err", err)
		}
	}()
	if err := Notify("READY=1"); err != nil {
		log.Warn("notify systemd", "err", err)
	}
	wg.Wait()
	return nil
}
