// Package fcspec loads Firecracker's OpenAPI document (swagger 2.0, as
// Firecracker ships it) into a router that validates requests the way
// Firecracker does: every object schema that lists properties is closed,
// because Firecracker's request structs reject unknown fields. The
// Firecracker stand-in (fakefc) and the API client's tests share it, so
// both judge requests by the same pinned document.
package fcspec

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"go.yaml.in/yaml/v4"
)

// Router reads the swagger 2.0 document at path, converts it to OpenAPI 3,
// closes its object schemas and returns a router over it.
func Router(path string) (routers.Router, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	js, err := json.Marshal(stringKeys(raw))
	if err != nil {
		return nil, fmt.Errorf("convert %s to json: %w", path, err)
	}
	var doc2 openapi2.T
	if err := json.Unmarshal(js, &doc2); err != nil {
		return nil, fmt.Errorf("load swagger %s: %w", path, err)
	}
	doc3, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("convert swagger %s: %w", path, err)
	}
	doc3.Servers = openapi3.Servers{{URL: "/"}}
	no := false
	for _, s := range doc3.Components.Schemas {
		if s.Value != nil && len(s.Value.Properties) > 0 {
			s.Value.AdditionalProperties = openapi3.AdditionalProperties{Has: &no}
		}
	}
	if err := doc3.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate converted spec %s: %w", path, err)
	}
	return legacy.NewRouter(doc3)
}

// stringKeys turns YAML maps with non-string keys (response codes such as
// 204) into JSON-compatible maps.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case map[string]any:
		for k, x := range v {
			v[k] = stringKeys(x)
		}
		return v
	case []any:
		for i, x := range v {
			v[i] = stringKeys(x)
		}
		return v
	}
	return v
}
