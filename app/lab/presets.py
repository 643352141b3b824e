"""Demo modules. A preset is declared as the source text a student would write; the lab
evaluates that very text to build the live module, so the generated code and the module shown
can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.lab.styles import CONTAINERS, STYLES
from app.langs import Text


@dataclass(frozen=True)
class Layer:
    name: str
    expr: str  # e.g. "nn.Linear(3, 3)"


@dataclass(frozen=True)
class Member:
    name: str
    init: str  # torch expression for the initial tensor, e.g. "torch.ones(10, 10)"
    default_style: str
    styles: tuple[str, ...] = tuple(STYLES)


@dataclass(frozen=True)
class Preset:
    id: str
    class_name: str
    title: dict[str, str]
    description: dict[str, str]
    layers: tuple[Layer, ...]
    members: tuple[Member, ...]
    forward: str  # body of ``forward(self, x)``
    sample_input: str  # torch expression for a batch ``forward`` accepts
    source: str = ""  # where the preset comes from
    custom: bool = False  # members come from the spec (names, shapes, styles), not from the preset
    # A real model (``make``), made by code outside the lab: its members are the model's own tensors
    # (dotted names), each restyled in place when its style is not the default one. ``make_code`` is
    # its source (lines leaving it in ``model``), ``imports`` the lines they need; ``call`` is how a
    # forward is called (a transformers model: its logits).
    make: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    make_code: str = ""
    imports: str = ""
    call: str = "model(x)"
    member_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "member_names", tuple(m.name for m in self.members))

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            id="mymodule",
            class_name="MyModule",
            title=Text("MyModule (register_parameter tutorial)"),
            description=Text(
                "Two bias-free convolutions plus a 10x10 'weight' of ones and a 10-element 'bias' of "
                "zeros, registered with register_parameter as in the tutorial. Switch them to buffers to "
                "see them leave named_parameters() but stay in state_dict()."
            ),
            layers=(
                Layer(
                    "conv1",
                    "nn.Conv2d(in_channels=3, out_channels=6, kernel_size=3, stride=1, padding=1, "
                    "bias=False)",
                ),
                Layer(
                    "conv2",
                    "nn.Conv2d(in_channels=6, out_channels=9, kernel_size=3, stride=1, padding=1, "
                    "bias=False)",
                ),
            ),
            members=(
                Member("weight", "torch.ones(10, 10)", "register_parameter"),
                Member("bias", "torch.zeros(10)", "register_parameter"),
            ),
            forward="x = self.conv1(x)\nx = self.conv2(x)\nx = x * self.weight + self.bias\nreturn x",
            sample_input="torch.randn(1, 3, 10, 10)",
            source="seeds/000: register_buffer / register_parameter (bilibili, Enzo_Mi)",
        ),
        Preset(
            id="testmodel",
            class_name="TestModel",
            title=Text("TestModel (parameters vs buffers tutorial)"),
            description=Text(
                "A 3x3 linear layer with two parameters (attribute and register_parameter), a plain "
                "tensor attribute 'buffer1' and a registered buffer 'buffer2'. Move it to another device: "
                "buffer1 stays behind, buffer2 follows."
            ),
            layers=(Layer("linear", "nn.Linear(3, 3)"),),
            members=(
                Member("parameter1", "torch.randn(3)", "parameter"),
                Member("parameter2", "torch.randn(3)", "register_parameter"),
                Member("buffer1", "torch.randn(3)", "plain_tensor"),
                Member("buffer2", "torch.randn(3)", "buffer"),
            ),
            # The tutorial's forward used self.parameter1 in a class that never defined it; here all
            # four members exist, so it adds all four.
            forward="self.buffer1 += 1\nself.buffer2 += 1\n"
            "return self.linear(x) + self.parameter1 + self.parameter2 + self.buffer1 + self.buffer2",
            sample_input="torch.randn(2, 3)",
            source="seeds/001: register parameter / register_buffer (TestModel)",
        ),
        Preset(
            id="batchnorm",
            class_name="NormModel",
            title=Text("BatchNorm: running statistics"),
            description=Text(
                "A linear layer (without bias: the norm subtracts the batch mean, so a bias before it "
                "gets a gradient of exactly zero) and a BatchNorm1d, whose running_mean, running_var and "
                "int64 num_batches_tracked are buffers: forward in train mode updates them, eval mode "
                "does not, and .half() leaves the integer counter alone. 'scale' is a member to restyle."
            ),
            layers=(Layer("linear", "nn.Linear(4, 3, bias=False)"), Layer("bn", "nn.BatchNorm1d(3)")),
            members=(Member("scale", "torch.ones(3)", "parameter"),),
            forward="return self.bn(self.linear(x)) * self.scale",
            sample_input="torch.randn(8, 4)",
            source="BatchNorm's buffers, as the buffer tutorial mentions",
        ),
        Preset(
            id="positional_encoding",
            class_name="PositionalEncoding",
            title=Text("Positional encoding table"),
            description=Text(
                "A fixed sinusoidal table 'pe' added to token embeddings. It must move with the model but "
                "never train, which is why it is a buffer; persistent or not decides whether checkpoints "
                "carry it, and loading an old checkpoint into a non-persistent version fails strictly."
            ),
            layers=(Layer("embed", "nn.Embedding(10, 4)"),),
            members=(
                Member(
                    "pe",
                    # The sinusoidal table in one expression: cos(a) is sin(a + pi/2) on odd columns.
                    "torch.sin(torch.arange(8.0)[:, None] / 10000 ** (torch.arange(4) // 2 * 2 / 4)"
                    " + torch.arange(4) % 2 * torch.pi / 2)",
                    "buffer",
                ),
            ),
            forward="return self.embed(x) + self.pe[: x.shape[1]]",
            sample_input="torch.randint(0, 10, (2, 8))",
            source="the buffer tutorial's position-encoding example",
        ),
        Preset(
            id="tied_weights",
            class_name="TiedLM",
            title=Text("Tied embedding and output weights"),
            description=Text(
                "An embedding and an output layer share one weight: named_parameters() lists it once, "
                "state_dict() twice, so parameter counts differ with and without de-duplication."
            ),
            layers=(
                Layer("embed", "nn.Embedding(10, 4)"),
                Layer("head", "nn.Linear(4, 10, bias=False)"),
                Layer("head.weight", "self.embed.weight"),
            ),
            members=(Member("bias", "torch.zeros(10)", "parameter"),),
            forward="return self.head(self.embed(x)) + self.bias",
            sample_input="torch.randint(0, 10, (2, 5))",
            source="weight tying in language models",
        ),
        Preset(
            id="layer_list",
            class_name="LayerStack",
            title=Text("Sub-layers in a list"),
            description=Text(
                "Two linear blocks kept in 'blocks', then a head. In a plain Python list torch never sees "
                "them: no parameters, nothing in state_dict(), left behind by .to(), untouched by the "
                "optimizer though they get grads. nn.ModuleList and nn.Sequential register them as "
                "blocks.0, blocks.1."
            ),
            layers=(Layer("head", "nn.Linear(4, 2)"),),
            members=(
                Member("blocks", "[nn.Linear(4, 4) for _ in range(2)]", "python_list", tuple(CONTAINERS)),
            ),
            forward="for block in self.blocks:\n    x = torch.relu(block(x))\nreturn self.head(x)",
            sample_input="torch.randn(2, 4)",
            source="the classic ModuleList question",
        ),
        Preset(
            id="custom",
            class_name="CustomModule",
            title=Text("Custom module: your own members"),
            description=Text(
                "Name the members, give their shapes and styles (style.NAME=STYLE&shape.NAME=3x4). Names "
                "go to torch unfiltered, so its own refusals (a name with '.', an empty name, a name that "
                "already exists) show as results."
            ),
            layers=(Layer("linear", "nn.Linear(3, 3)"),),
            members=(),
            forward="return self.linear(x)",
            sample_input="torch.randn(2, 3)",
            source="issue 3: a module of the user's own",
            custom=True,
        ),
    )
}


def register(preset: Preset) -> None:
    """Add a preset made outside the lab (the composition root registers the tiny real
    architectures); a built-in preset keeps its id."""
    PRESETS.setdefault(preset.id, preset)


# Presets made on request, by the prefix of their id ("config:<digest>": a pasted config.json, kept
# by the architectures in a store the lab knows nothing of). A source gives the preset of an id, or
# raises a Refusal saying why there is none (an unknown digest, a model over the lab's cap). They
# are never listed (GET /api/presets, the page's menu): only a URL that names one opens it.
_SOURCES: dict[str, Callable[[str], Preset]] = {}


def add_source(prefix: str, source: Callable[[str], Preset]) -> None:
    """Make ids ``<prefix>:...`` open the preset ``source`` gives (the composition root does)."""
    _SOURCES[prefix] = source


def remove_source(prefix: str) -> None:
    _SOURCES.pop(prefix, None)


def find(preset_id: str) -> Preset | None:
    """The preset of an id: a listed one, or one a source makes (which may refuse, saying why);
    None when nothing has that id."""
    found = PRESETS.get(preset_id)
    if found is None and ":" in preset_id:
        source = _SOURCES.get(preset_id.partition(":")[0])
        if source is not None:
            return source(preset_id)
    return found


def lookup(preset_id: str) -> Preset:
    """The preset of an id already resolved (``app.lab.spec.resolve`` checked it exists)."""
    found = find(preset_id)
    if found is None:
        raise KeyError(preset_id)
    return found
