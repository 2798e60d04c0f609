package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Example sections of the commands' --help, by command
// path. They live in one table so the help reads as one voice and a test
// (TestEveryCommandHasExamples) can hold every runnable command to it.
var examples = map[string]string{
	"banger daemon status": `banger daemon status
banger daemon status --json | jq .pid`,
	"banger daemon stop": `banger daemon stop`,
	"banger daemon logs": `banger daemon logs
banger daemon logs -f --json | jq 'select(.level == "WARN")'`,
	"banger doctor": `banger doctor
banger doctor --json | jq '.checks[] | select(.status != "ok")'`,
	"banger image import": `banger image import ./rootfs.tar
banger image import docker.io/library/alpine:3.20 --name alpine`,
	"banger image list": `banger image list
banger image list --json | jq -r '.[].name'`,
	"banger image warm": `banger image warm
banger image warm debian-12 --vcpu 4 --memory 4096`,
	"banger image pull":   `banger image pull debian-12`,
	"banger image show":   `banger image show debian-12`,
	"banger image rm":     `banger image rm old-image`,
	"banger image export": `banger image export debian-12 -o debian-12.tar`,
	"banger tui":          `banger tui`,
	"banger vm stats": `banger vm stats
banger vm stats web db --json | jq '.[] | {vm, cpu_percent, mem_used}'
banger vm stats -w`,
	"banger version": `banger version
banger version --json`,
	"banger vm create": `banger vm create
banger vm create --name web --vcpu 4 --memory 4096 --disk-size 16G
banger vm create --image agents --json | jq -r .ip
banger vm create --name agent --allow @github --allow @model-apis --allow pkgs.example.org:443
banger vm create --name sealed --net none`,
	"banger vm run": `banger vm run
banger vm run --rm -- uname -a
banger vm run --name dev --workspace -- claude
banger vm run --from web@before-upgrade -- make test
banger vm run --rm --allow '*.debian.org' -- apt-get update`,
	"banger vm list": `banger vm list
banger vm list --json | jq -r '.[] | select(.state == "running") | .name'`,
	"banger vm show": `banger vm show web
banger vm show web --json | jq -r .ip`,
	"banger vm start": `banger vm start web
banger vm start --cold web   # a suspended VM: boot from its disks, drop its saved memory`,
	"banger vm pause":   `banger vm pause web`,
	"banger vm resume":  `banger vm resume web`,
	"banger vm suspend": `banger vm suspend web   # then vm start or vm resume restores it`,
	"banger vm snapshot": `banger vm snapshot web --name before-upgrade
banger vm snapshot web   # snap-1, snap-2, ...`,
	"banger vm snapshot list": `banger vm snapshot list
banger vm snapshot list web --json | jq -r '.[].ref'`,
	"banger vm snapshot rm": `banger vm snapshot rm web@before-upgrade`,
	"banger vm fork": `banger vm fork web -n 3   # web-1, web-2, web-3
banger vm fork dev -n 2 --name try   # try-1, try-2; each pulls to banger/try-N`,
	"banger vm restart": `banger vm restart web`,
	"banger vm stop":    `banger vm stop web`,
	"banger vm delete": `banger vm delete web
banger vm delete --force web db`,
	"banger vm exec": `banger vm exec web -- uname -a
banger vm exec -t web -- bash
banger vm exec -e DEBUG=1 -w /root/repo web -- make test`,
	"banger vm ssh": `banger vm ssh web
banger vm ssh web -- systemctl status`,
	"banger vm cp": `banger vm cp ./config.yaml web:/root/
banger vm cp web:/root/repo/dist ./dist
banger vm cp --max-size 5G web:/var/log ./logs`,
	"banger vm ports": `banger vm ports web
banger vm ports web --json`,
	"banger vm health": `banger vm health web`,
	"banger vm net": `banger vm net web
banger vm net web allow pkgs.example.org:443 downloads.example.org @github
banger vm net web deny pkgs.example.org:443
banger vm net web mode none
banger vm net web --json | jq -r '.policy.allow[]'`,
	"banger vm net log": `banger vm net log web
banger vm net log -f web
banger vm net log -f --json web | jq -r 'select(.verdict == "deny") | .name'`,
	"banger vm logs": `banger vm logs web
banger vm logs -f web`,
	"banger vm workspace prepare": `banger vm workspace prepare web
banger vm workspace prepare web --path ~/src/app --mode full_copy`,
	"banger vm workspace pull": `banger vm workspace pull web
git log banger/web`,
	"banger vm workspace status": `banger vm workspace status web`,
	"banger vm session start": `banger vm session start web --name agent -- claude
banger vm session start web --name server --cwd /root/repo -- npm run dev`,
	"banger vm session list":   `banger vm session list web`,
	"banger vm session attach": `banger vm session attach web agent`,
	"banger vm session logs": `banger vm session logs web server
banger vm session logs -f web server`,
	"banger vm session stop": `banger vm session stop web server
banger vm session stop --signal INT web agent`,
	"banger vm session rm": `banger vm session rm web server`,
}

// applyExamples sets the Example of every command that has none of its
// own, indented as cobra prints it.
func applyExamples(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			if ex, ok := examples[c.CommandPath()]; ok {
				c.Example = "  " + strings.ReplaceAll(ex, "\n", "\n  ")
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
