package dockerfile_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/cmdrun"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/image/debian/debiantest"
	"banger/internal/image/dockerfile"
	"banger/internal/testenv"
)

func TestDetectEngine(t *testing.T) {
	tests := []struct {
		name    string
		present []string
		want    string
		wantErr bool
	}{
		{"podman only", []string{"podman"}, dockerfile.Podman, false},
		{"docker only", []string{"docker"}, dockerfile.Docker, false},
		{"both prefers podman", []string{"docker", "podman"}, dockerfile.Podman, false},
		{"neither", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			look := func(name string) (string, error) {
				if slices.Contains(tt.present, name) {
					return "/usr/bin/" + name, nil
				}
				return "", exec.ErrNotFound
			}
			e, err := dockerfile.DetectEngine(look)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "podman") || !strings.Contains(err.Error(), "docker") {
					t.Fatalf("err = %v, want one naming podman and docker", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Name != tt.want || e.Bin != "/usr/bin/"+tt.want {
				t.Fatalf("engine %+v, want %s", e, tt.want)
			}
			if e.Name == dockerfile.Docker && len(e.ExtraArgs) != 0 {
				t.Errorf("docker extra args %q", e.ExtraArgs)
			}
		})
	}
}

func TestBuildArgs(t *testing.T) {
	p := dockerfile.Engine{Name: dockerfile.Podman, Bin: "/usr/bin/podman", ExtraArgs: []string{"--storage-driver", "vfs"}}.WithStorage("/s")
	got := dockerfile.BuildArgs(p, "/c/Dockerfile", "/c", "banger-build-x")
	want := []string{"/usr/bin/podman", "--storage-driver", "vfs", "--root", "/s/storage", "--runroot", "/s/run",
		"build", "--network", "host", "-f", "/c/Dockerfile", "-t", "banger-build-x", "--isolation", "chroot", "--layers=false", "/c"}
	if !slices.Equal(got, want) {
		t.Fatalf("podman build argv\n got %q\nwant %q", got, want)
	}
	d := dockerfile.Engine{Name: dockerfile.Docker, Bin: "docker"}.WithStorage("/s")
	got = dockerfile.BuildArgs(d, "/c/Dockerfile", "/c", "t")
	want = []string{"docker", "build", "--network", "host", "-f", "/c/Dockerfile", "-t", "t", "/c"}
	if !slices.Equal(got, want) {
		t.Fatalf("docker build argv\n got %q\nwant %q", got, want)
	}
}

// engine returns podman with its storage in the test cache (kept between
// runs, so the base image is loaded once per base).
func engine(t *testing.T) dockerfile.Engine {
	t.Helper()
	testenv.RequireCommand(t, "podman")
	e, err := dockerfile.DetectEngine(exec.LookPath)
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != dockerfile.Podman {
		t.Fatalf("engine %s, want podman", e.Name)
	}
	return e.WithStorage(filepath.Join(debiantest.CacheDir(t), "podman"))
}

// TestBuild builds a Dockerfile FROM banger/debian-12 that adds a file and
// installs jq from Debian's archive, and finds both in rootfs.ext4.
func TestBuild(t *testing.T) {
	base := debiantest.Image(t)
	e := engine(t)
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "ctx")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hello.txt", "hello from a Dockerfile\n")
	write("Dockerfile", "FROM "+dockerfile.BaseTag+"\n"+
		"COPY hello.txt /etc/banger-hello.txt\n"+
		"RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n"+
		"RUN echo 'dockerfile was here' > /root/marker\n")
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var stages []string
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	agent := debiantest.AgentBin(t)
	m, err := dockerfile.Build(ctx, e, dockerfile.Options{
		Dockerfile: filepath.Join(ctxDir, "Dockerfile"), Name: "jq-box", Base: base,
		AgentBin: agent, Log: logf,
		Progress: func(stage string, done, total int64) {
			if done == 0 {
				stages = append(stages, stage)
			}
		},
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "jq-box" || m.Source.Kind != image.SourceDockerfile || m.Init != image.InitSystemd || m.AgentVersion == "" {
		t.Errorf("manifest %+v", m)
	}
	if want := []string{dockerfile.StageBase, dockerfile.StageBuild, dockerfile.StageExport,
		debian.StageConfigure, debian.StageKernel, debian.StageFilesystem}; !slices.Equal(stages, want) {
		t.Errorf("stages %q, want %q", stages, want)
	}
	for _, f := range image.BootFiles {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	// Kernel and initramfs are the base image's.
	for _, f := range []string{image.FileVmlinuz, image.FileInitrd} {
		a, _ := os.ReadFile(filepath.Join(base, f))
		b, _ := os.ReadFile(filepath.Join(out, f))
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("%s differs from the base image's", f)
		}
	}
	rootfs := filepath.Join(out, image.FileRootfs)
	if got := debugfs(t, rootfs, "cat /etc/banger-hello.txt"); !strings.Contains(got, "hello from a Dockerfile") {
		t.Errorf("added file: %q", got)
	}
	if got := debugfs(t, rootfs, "stat /usr/bin/jq"); !strings.Contains(got, "Type: regular") {
		t.Errorf("jq not installed:\n%s", got)
	}
	if got := debugfs(t, rootfs, "stat "+guestcontract.AgentPath); !strings.Contains(got, "Mode:  0755") {
		t.Errorf("agent:\n%s", got)
	}
	if got := debugfs(t, rootfs, "stat /etc/systemd/system/multi-user.target.wants/"+guestcontract.AgentUnitName); !strings.Contains(got, "Type: symlink") {
		t.Errorf("agent unit not enabled:\n%s", got)
	}
	if got := debugfs(t, rootfs, "ls /etc/ssh"); strings.Contains(got, "ssh_host_") {
		t.Errorf("ssh host keys:\n%s", got)
	}
	// Ownership survives the trip through the engine.
	if got := debugfs(t, rootfs, "stat /usr/bin/sudo"); !strings.Contains(got, "User:     0") || !strings.Contains(got, "Mode:  04755") {
		t.Errorf("sudo lost its owner or setuid bit:\n%s", got)
	}
	seed := filepath.Join(out, image.FileWorkSeed)
	if got := debugfs(t, seed, "cat /marker"); !strings.Contains(got, "dockerfile was here") {
		t.Errorf("work seed lacks /root/marker: %q", got)
	}
	if got := debugfs(t, seed, "ls /"); !strings.Contains(got, ".bashrc") {
		t.Errorf("work seed lacks the base's /root:\n%s", got)
	}
	// The build's image and container are gone; the base stays.
	imgs, err := exec.Command(e.Bin, append(e.ExtraArgs, "images", "--format", "{{.Repository}}")...).Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(imgs), "banger-build-") || !strings.Contains(string(imgs), dockerfile.BaseTag) {
		t.Errorf("engine images after the build:\n%s", imgs)
	}
}

func TestBuild_FailingDockerfile(t *testing.T) {
	base := debiantest.Image(t)
	e := engine(t)
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM "+dockerfile.BaseTag+"\nRUN echo about-to-fail && false-command-that-does-not-exist\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	_, err = dockerfile.Build(context.Background(), e, dockerfile.Options{
		Dockerfile: df, Base: base, AgentBin: debiantest.AgentBin(t), Log: logf,
	}, out)
	if err == nil {
		t.Fatal("a failing Dockerfile built")
	}
	var ce *cmdrun.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *cmdrun.Error", err)
	}
	for _, w := range []string{"false-command-that-does-not-exist", "about-to-fail", logPath} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return string(out)
}

func TestSpecialModes(t *testing.T) {
	out := `debugfs 1.47.0 (5-Feb-2023)
debugfs: ls -p "/"
/2/040755/0/0/.//
/652/041777/0/0/tmp//
/12/040755/0/0/usr//
debugfs: ls -p "/usr/bin"
/701/100755/0/0/cvtsudoers/345280/
/969/104755/0/0/sudo/281624/
/970/120777/0/0/sudoedit/4/
/980/102755/0/42/chage/80000/
debugfs: ls -p "/root/.ssh"
/990/040700/0/0/.//
`
	got := dockerfile.SpecialModes(out)
	want := []dockerfile.ModeFix{
		{Path: "tmp", Mode: 0o777 | os.ModeSticky},
		{Path: "usr/bin/sudo", Mode: 0o755 | os.ModeSetuid},
		{Path: "usr/bin/chage", Mode: 0o755 | os.ModeSetgid},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SpecialModes = %v, want %v", got, want)
	}
}
