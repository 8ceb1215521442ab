import pytest

from circuitcheck import Circuit, Component, ComponentError, Edge, parse_components


@pytest.mark.parametrize(
    "text, kind, layer, head, port, hook",
    [
        ("L1H3", "head", 1, 3, None, "blocks.1.attn.hook_z"),
        ("L1H3.q", "head", 1, 3, "q", "blocks.1.attn.hook_q"),
        ("L0H0.v", "head", 0, 0, "v", "blocks.0.attn.hook_v"),
        ("L2.attn", "attn", 2, None, None, "blocks.2.hook_attn_out"),
        ("L2.mlp", "mlp", 2, None, None, "blocks.2.hook_mlp_out"),
        ("embed", "embed", None, None, None, "hook_embed"),
        ("pos_embed", "pos_embed", None, None, None, "hook_pos_embed"),
    ],
)
def test_component_strings_parse_to_typed_components(text, kind, layer, head, port, hook):
    component = Component.parse(text)
    assert (component.kind, component.layer, component.head, component.port) == (kind, layer, head, port)
    assert component.hook_name == hook
    assert str(component) == text


def test_positions_narrow_a_component():
    single = Component.parse("L1H3@-1")
    assert single.positions.indices(10) == [9]
    span = Component.parse("L0.mlp@3:7")
    assert span.positions.indices(10) == [3, 4, 5, 6]
    assert str(span) == "L0.mlp@3:7"
    assert Component.parse("L0.attn@2:").positions.indices(5) == [2, 3, 4]


def test_position_outside_the_input_names_the_valid_range():
    with pytest.raises(ComponentError, match=r"position 12 is out of range: the inputs have 10 positions, valid are 0 to 9"):
        Component.parse("L1H3@12").positions.indices(10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("L1H", "cannot parse component 'L1H'"),
        ("L1.foo", "bad layer part 'foo'"),
        ("L1H3.x", r"a head's inputs are \.q, \.k and \.v"),
        ("L1H3@", "bad position ''"),
        ("L1H3@a:b", "bad position 'a:b'"),
        ("head3", "valid forms"),
    ],
)
def test_bad_syntax_is_a_clear_error(text, message):
    with pytest.raises(ComponentError, match=message):
        Component.parse(text)


def test_validation_names_the_bad_layer_and_the_valid_range(induction_2l):
    with pytest.raises(ComponentError, match=r"layer 7 does not exist in L7H0: model zoo:induction-2l has layers 0-1"):
        Component.parse("L7H0").validate(induction_2l)


def test_validation_names_the_bad_head_and_the_valid_range(induction_2l):
    n_heads = induction_2l.cfg.n_heads
    with pytest.raises(ComponentError, match=rf"head 9 does not exist in L1H9: .* has heads 0-{n_heads - 1}"):
        Component.parse("L1H9").validate(induction_2l)


def test_an_attention_only_model_has_no_mlps(induction_2l):
    with pytest.raises(ComponentError, match="attention-only and has no MLPs"):
        Component.parse("L0.mlp").validate(induction_2l)


def test_mlps_exist_in_a_model_with_mlps(random_model):
    assert Component.parse("L1.mlp").validate(random_model).layer == 1


def test_parse_components_accepts_strings_lists_and_components():
    expected = [Component.parse("L0H2"), Component.parse("L1H3")]
    assert parse_components("L0H2 L1H3") == expected
    assert parse_components("L0H2, L1H3") == expected
    assert parse_components(["L0H2", Component.parse("L1H3")]) == expected


def test_circuit_is_sorted_deduplicated_and_named():
    circuit = Circuit.parse("L1H3 L0H2 L1H1 L0H2", name="induction")
    assert [str(c) for c in circuit] == ["L0H2", "L1H1", "L1H3"]
    assert circuit.name == "induction" and len(circuit) == 3
    assert "L1H1" in circuit
    assert Circuit.parse("L0H2 L1H3") == Circuit.parse("L1H3 L0H2")
    assert [str(c) for c in circuit.without("L1H1")] == ["L0H2", "L1H3"]


def test_circuit_with_edges():
    circuit = Circuit.parse("L0H2 -> L1H3.k, L1H3")
    assert circuit.edges == (Edge(Component.parse("L0H2"), Component.parse("L1H3.k")),)
    assert str(circuit.edges[0]) == "L0H2 -> L1H3.k"


@pytest.mark.parametrize("text", ["L1H3 -> L0H2", "L1H1 -> L1H3.q", "L0H2.q -> L1H3", "L0H2 L1H3"])
def test_edges_must_go_forward_from_an_output(text):
    with pytest.raises(ComponentError):
        Edge.parse(text)


def test_empty_circuit_is_an_error(induction_2l):
    with pytest.raises(ComponentError, match="is empty"):
        Circuit.parse("", name="nothing").validate(induction_2l)
