package imagectl

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/debian"
)

func TestBuiltin_Agents(t *testing.T) {
	e := newEnv(t)
	ent, err := e.m.LookupCatalog(context.Background(), "agents")
	if err != nil {
		t.Fatal(err)
	}
	if ent == nil || ent.Recipe == nil {
		t.Fatalf("agents: entry %+v, want a recipe", ent)
	}
	if ent.Catalog != BuiltinCatalog || ent.Description == "" {
		t.Errorf("agents: catalog %q, description %q", ent.Catalog, ent.Description)
	}
	if err := ent.Validate(); err != nil {
		t.Fatal(err)
	}
	r := *ent.Recipe
	if r.Name != "agents" || len(r.NPMPackages) == 0 || !slices.Contains(r.Packages, "npm") {
		t.Fatalf("agents recipe = %+v", r)
	}
	if r.Hash() != debian.Agents().Hash() || r.Hash() == debian.Default().Hash() {
		t.Fatal("the agents entry is not the agents recipe")
	}
	var names []string
	for _, c := range Builtin().Images {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"debian-12", "debian-13", "agents"}) {
		t.Errorf("builtin catalog = %q", names)
	}
}

// TestManager_EnsureBuildsAgents makes `vm run --image agents` on a host
// without it: the recipe is built (here by a fake) and its npm packages
// reach the wire form, sorted.
func TestManager_EnsureBuildsAgents(t *testing.T) {
	e := newEnv(t)
	calls := &atomic.Int32{}
	fake := fakeRecipeBuilder(calls, nil)
	var built debian.Recipe
	e.m.BuildRecipe = func(ctx context.Context, r debian.Recipe, opts debian.BuildOptions, outDir string) (*image.Manifest, error) {
		built = r
		man, err := fake(ctx, r, opts, outDir)
		if err != nil {
			return nil, err
		}
		man.NPMPackages = map[string]string{"opencode-ai": "0.5.1", "@openai/codex": "0.20.0", "@anthropic-ai/claude-code": "1.0.80"}
		return man, nil
	}
	ctx := context.Background()
	img, err := e.m.Ensure(ctx, nil, "agents")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "agents" || calls.Load() != 1 || !slices.Equal(built.NPMPackages, debian.Agents().NPMPackages) {
		t.Fatalf("got %s after %d builds of %+v", img.Name, calls.Load(), built)
	}
	if man := mustManifest(t, img); man.Source.RecipeHash != debian.Agents().Hash() {
		t.Errorf("recipe hash %s, want agents'", man.Source.RecipeHash)
	}
	info, err := e.m.Info(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.NPMPackage{
		{Name: "@anthropic-ai/claude-code", Version: "1.0.80"},
		{Name: "@openai/codex", Version: "0.20.0"},
		{Name: "opencode-ai", Version: "0.5.1"},
	}
	if !slices.Equal(info.NPMPackages, want) {
		t.Errorf("Info().NPMPackages = %v, want %v", info.NPMPackages, want)
	}
}
