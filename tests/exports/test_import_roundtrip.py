"""Round trip, by property: any workspace, exported then imported into a fresh project,
comes back equal up to the id mapping, in every libraries mode; older data versions are
upgraded on the way in."""

import io
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from exports.binfile import format as binfile
from exports.models import JobState
from filesync import services
from filesync.content import OBJECT_TYPES, SUPPORTED_FEATURES
from filesync.models import DATA_VERSION, File, Page
from tests.exports.test_import import documents, export_bytes, import_bytes, inverse
from tests.exports.test_import_hostile import Rewrite

pytestmark = pytest.mark.django_db(transaction=True)

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
asset_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=6)
coordinates = st.integers(min_value=-10_000, max_value=10_000)
sizes = st.integers(min_value=0, max_value=10_000)
features = st.lists(st.sampled_from(sorted(SUPPORTED_FEATURES)), unique=True, max_size=3)
plain_objects = st.dictionaries(
    asset_ids,
    st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(OBJECT_TYPES))},
        optional={"x": coordinates, "y": coordinates, "width": sizes, "height": sizes},
    ),
    max_size=3,
)
assets = st.fixed_dictionaries(
    {
        "components": st.dictionaries(
            asset_ids,
            st.fixed_dictionaries({"name": names}, optional={"objects": plain_objects}),
            max_size=3,
        ),
        "colors": st.dictionaries(
            asset_ids,
            st.fixed_dictionaries(
                {"name": names, "color": st.from_regex(r"#[0-9a-f]{6}", fullmatch=True)}
            ),
            max_size=3,
        ),
        "typographies": st.dictionaries(
            asset_ids,
            st.fixed_dictionaries(
                {"name": names, "font_size": st.integers(min_value=6, max_value=96)}
            ),
            max_size=3,
        ),
    }
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | names,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
media_types = st.sampled_from(["image/png", "image/svg+xml", "application/octet-stream"])


def objects_using(own: File, others: list[File], media: list[str]) -> st.SearchStrategy:
    """Page objects that may use the file's own assets, other files' assets (libraries,
    linked or not, and designs) and the file's media."""
    targets = [own, *others]
    refs = {
        kind: [(str(f.id), asset_id) for f in targets for asset_id in f.assets[kind]]
        for kind in ("components", "colors", "typographies")
    }
    optional = {
        "x": coordinates,
        "y": coordinates,
        "width": sizes,
        "height": sizes,
        "name": names,
        "props": json_values,
    }
    for kind, ids in refs.items():
        if ids:
            optional[kind] = st.sampled_from(ids)
    if media:
        optional["image"] = st.sampled_from(media)

    def shape(drawn: dict) -> dict:
        obj = {k: v for k, v in drawn.items() if k not in refs}
        if "components" in drawn:
            obj["component_file"], obj["component_id"] = drawn["components"]
        if "colors" in drawn:
            obj["fill_color_ref"] = dict(zip(("file", "id"), drawn["colors"], strict=True))
        if "typographies" in drawn:
            obj["typography_ref"] = dict(zip(("file", "id"), drawn["typographies"], strict=True))
        return obj

    one = st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(OBJECT_TYPES))}, optional=optional
    ).map(shape)
    return st.dictionaries(asset_ids, one, max_size=4)


def fill(file: File, others: list[File], data) -> None:
    """Media of small random bytes, then pages of objects using `others`, to a file."""
    media = []
    for n in range(data.draw(st.integers(min_value=0, max_value=2), label="media")):
        media.append(
            services.add_media(
                file=file,
                name=f"media-{n}",  # unique in the file: `inverse` maps media by name
                stream=io.BytesIO(data.draw(st.binary(max_size=64))),
                content_type=data.draw(media_types),
                width=data.draw(st.none() | sizes),
                height=data.draw(st.none() | sizes),
            )
        )
    media_ids = [str(m.id) for m in media]
    for _ in range(data.draw(st.integers(min_value=0, max_value=3), label="pages")):
        services.add_page(
            file=file,
            name=data.draw(names),
            objects=data.draw(objects_using(file, others, media_ids)),
        )


def build_workspace(team, data):
    """Designs in `work`; libraries in `work` or on a shelf project beside it, some linked
    (libraries may use each other, in cycles too), referenced whether linked or not; designs
    may use each other's assets too."""
    work = services.create_project(team=team, name="Work")
    shelf = services.create_project(team=team, name="Shelf")
    libraries = []
    for _ in range(data.draw(st.integers(min_value=0, max_value=3), label="libraries")):
        library = services.create_file(
            project=data.draw(st.sampled_from([work, shelf])),
            name=data.draw(names),
            is_library=True,
            features=data.draw(features),
            assets=data.draw(assets),
        )
        fill(library, libraries, data)
        for earlier in libraries:
            if data.draw(st.booleans()):
                services.link_library(file=library, library=earlier)
            if data.draw(st.booleans()):
                services.link_library(file=earlier, library=library)
        libraries.append(library)
    designs = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="designs")):
        design = services.create_file(
            project=work,
            name=data.draw(names),
            features=data.draw(features),
            assets=data.draw(assets),
        )
        fill(design, [*libraries, *designs], data)
        for library in libraries:
            if data.draw(st.booleans()):
                services.link_library(file=design, library=library)
        designs.append(design)
    return work


def comparable(archive: dict) -> dict:
    """A file document lists its media by id, and the copies' media have new ids: their
    order is not the original's, whatever the mapping. Compare them as a set."""
    for name, document in archive.items():
        if name.startswith("files/") and name.count("/") == 1:
            document["media"] = sorted(document["media"])
    return archive


@pytest.mark.parametrize("mode", ["all", "merge", "detach"])
@hypothesis_settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_workspace_comes_back_equal_up_to_the_id_mapping(team, editor, mode, data):
    work = build_workspace(team, data)
    original = export_bytes(user=editor, project=work, libraries=mode)
    target = services.create_project(team=team, name="Restored")

    job = import_bytes(original, project=target, user=editor)

    assert job.state == JobState.SUCCEEDED, job.error_message
    assert set(job.files.values()) == {str(f.id) for f in File.objects.filter(project=target)}
    again = export_bytes(user=editor, project=target, libraries=mode)
    assert comparable(documents(again, inverse(job))) == comparable(documents(original))


def test_an_archive_at_data_version_1_is_upgraded_on_the_way_in(workspace, editor, team):
    """Objects (on pages and in components) written with `w`/`h` come back with
    `width`/`height`, at the server's data version."""
    archive = Rewrite(export_bytes(user=editor, project=workspace.project, libraries="all"))
    sizes = {}  # (file id, page id, object id) -> (w, h)

    def downgrade_manifest(manifest):
        for file in manifest["files"]:
            file["data_version"] = 1

    def downgrade_file(document):
        document["data_version"] = 1
        for component in document["assets"]["components"].values():
            component["objects"] = {"root": {"type": "rect", "w": 80, "h": 24}}

    archive.edit_json(binfile.MANIFEST, downgrade_manifest)
    for entry in list(archive.entries):
        parts = entry.name.removesuffix(".json").split("/")
        if len(parts) == 2 and parts[0] == "files":
            archive.edit_json(entry.name, downgrade_file)
        elif len(parts) == 4 and parts[2] == "pages":
            page = json.loads(entry.data)
            for n, (object_id, obj) in enumerate(sorted(page["objects"].items())):
                obj["w"], obj["h"] = 10 + n, 20 + n
                sizes[parts[1], parts[3], object_id] = (10 + n, 20 + n)
            entry.data = binfile.encode_json(page)
    assert sizes
    target = services.create_project(team=team, name="Restored")

    job = import_bytes(archive.build(), project=target, user=editor)

    assert job.state == JobState.SUCCEEDED, job.error_message
    for (file_id, page_id, object_id), (w, h) in sizes.items():
        obj = Page.objects.get(file_id=job.files[file_id], page_id=page_id).object_map[object_id]
        assert (obj.get("width"), obj.get("height")) == (w, h)
        assert "w" not in obj and "h" not in obj
    library = File.objects.get(pk=job.files[str(workspace.library.id)])
    assert library.data_version == DATA_VERSION
    assert library.assets["components"]["btn"]["objects"] == {
        "root": {"type": "rect", "width": 80, "height": 24}
    }
