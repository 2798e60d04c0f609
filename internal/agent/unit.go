package agent

// BinaryPath is where images install banger-agent.
const BinaryPath = "/usr/local/bin/banger-agent"

// UnitName is the systemd unit the image builder installs and enables.
const UnitName = "banger-agent.service"

// SystemdUnit is the text of banger-agent.service. It runs early (no
// default dependencies, after local filesystems), before sshd and
// network-online.target so the identity (hostname, address, keys, host
// keys) is in place before they start, and tells systemd it is ready once
// the identity is applied and the listeners run. Install it at
// /etc/systemd/system/banger-agent.service and enable it (a symlink in
// multi-user.target.wants).
const SystemdUnit = `[Unit]
Description=banger guest agent
Documentation=man:banger(1)
DefaultDependencies=no
After=local-fs.target systemd-udevd.service
Wants=systemd-udevd.service
Before=ssh.service sshd.service network-online.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=` + BinaryPath + ` serve
Restart=always
RestartSec=1
TimeoutStartSec=90
KillMode=mixed

[Install]
WantedBy=multi-user.target
`
