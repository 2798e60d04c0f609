// Command agentstub stands in for banger-agent in image tests when the
// real agent is not built: it answers `version` and, at boot, reports the
// mounts of / and /root to the kernel log (and so to the serial console).
package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("banger-agent-stub 0")
		return
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && (f[1] == "/" || f[1] == "/root") {
			msg := fmt.Sprintf("banger-agent-stub: mount %s %s %s\n", f[1], f[2], f[0])
			if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
				k.WriteString(msg)
				k.Close()
			}
			fmt.Print(msg)
		}
	}
	for {
		time.Sleep(time.Hour)
	}
}
