"""The Dagster UI as the data catalog: every asset carries what a reader of the catalog needs."""

import dagster as dg
import pytest

from de_assets.catalog.catalogue import COLUMN_LINEAGE, COLUMN_SCHEMA
from de_assets.catalog.lineage import COLUMN_LINEAGE as DECLARED
from de_assets.definitions import build_definitions
from de_assets.settings import HOME, load_settings

STAGES = {"generation", "ingestion", "transformation", "serving"}
TIERS = {"hot", "cold", "source"}
PII = {"true", "false", "pseudonymised"}
WITH_LINEAGE = {"transformation", "serving"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    definitions = build_definitions(load_settings({HOME: str(home)}))
    return definitions.resolve_asset_graph()


def _assets(graph):
    return sorted(graph.get_all_asset_keys(), key=lambda key: key.to_user_string())


def _schema_columns(graph, key) -> dict[str, dg.TableColumn]:
    schema = graph.get(key).metadata.get(COLUMN_SCHEMA)
    return {column.name: column for column in schema.columns} if schema is not None else {}


def _described_problems(graph) -> list[str]:
    problems = []
    for key in _assets(graph):
        node, name = graph.get(key), key.to_user_string()
        if not (node.description or "").strip():
            problems.append(f"{name}: no description")
        if not node.owners:
            problems.append(f"{name}: no owners")
        if not node.kinds:
            problems.append(f"{name}: no kinds")
        if node.group_name not in STAGES or key.path[0] != node.group_name:
            problems.append(f"{name}: group {node.group_name!r} is not its stage")
        if node.tags.get("tier") not in TIERS:
            problems.append(f"{name}: tier tag {node.tags.get('tier')!r}")
        if node.tags.get("pii") not in PII:
            problems.append(f"{name}: pii tag {node.tags.get('pii')!r}")
        if "dagster/code_references" not in node.metadata:
            problems.append(f"{name}: no code reference")
    return problems


def _schema_problems(graph) -> list[str]:
    problems = []
    for key in _assets(graph):
        columns = _schema_columns(graph, key)
        if not columns:
            problems.append(f"{key.to_user_string()}: no column schema")
        problems += [
            f"{key.to_user_string()}.{name}: no description"
            for name, column in columns.items()
            if not (column.description or "").strip()
        ]
    return problems


def _lineage_problems(graph) -> list[str]:
    problems = []
    for key in _assets(graph):
        node, name = graph.get(key), key.to_user_string()
        if node.group_name not in WITH_LINEAGE:
            continue
        lineage = node.metadata.get(COLUMN_LINEAGE)
        if lineage is None:
            problems.append(f"{name}: no column lineage")
            continue
        declared, columns = set(lineage.deps_by_column), set(_schema_columns(graph, key))
        if declared != columns:
            problems.append(f"{name}: lineage columns differ from the schema: {sorted(declared ^ columns)}")
        upstream = node.parent_keys
        for column, deps in lineage.deps_by_column.items():
            for dep in deps:
                if dep.asset_key not in upstream:
                    problems.append(f"{name}.{column}: {dep.asset_key.to_user_string()} is not upstream")
                elif dep.column_name not in _schema_columns(graph, dep.asset_key):
                    problems.append(
                        f"{name}.{column}: {dep.asset_key.to_user_string()} has no column {dep.column_name!r}"
                    )
    return problems


def test_every_asset_is_described_owned_kinded_grouped_and_tagged(graph):
    assert _described_problems(graph) == []


def test_every_asset_has_a_column_schema_with_descriptions(graph):
    assert _schema_problems(graph) == []


def test_transformation_and_serving_columns_have_lineage_to_real_upstream_columns(graph):
    assert _lineage_problems(graph) == []


def test_lineage_is_declared_only_for_assets_that_exist(graph):
    assert set(DECLARED) <= {key.to_user_string() for key in _assets(graph)}


def test_the_walk_reports_what_a_careless_asset_lacks():
    # The same walk over an asset that forgot its catalog entries must list each gap.
    orders = dg.AssetKey(["transformation", "orders"])
    upstream = dg.AssetSpec(
        orders,
        group_name="transformation",
        metadata={
            COLUMN_SCHEMA: dg.TableSchema(columns=[dg.TableColumn("order_id", "int64", description="key")])
        },
    )
    careless = dg.AssetSpec(
        ["serving", "careless"],
        group_name="serving",
        deps=[orders],
        metadata={
            COLUMN_SCHEMA: dg.TableSchema(columns=[dg.TableColumn("total", "float64")]),
            COLUMN_LINEAGE: dg.TableColumnLineage(
                deps_by_column={"total": [dg.TableColumnDep(asset_key=orders, column_name="amount")]}
            ),
        },
    )
    graph = dg.Definitions(assets=[upstream, careless]).resolve_asset_graph()
    described = _described_problems(graph)
    assert "serving/careless: no description" in described
    assert "serving/careless: no owners" in described
    assert "serving/careless: tier tag None" in described
    assert "serving/careless.total: no description" in _schema_problems(graph)
    assert _lineage_problems(graph) == [
        "serving/careless.total: transformation/orders has no column 'amount'",
        "transformation/orders: no column lineage",
    ]
