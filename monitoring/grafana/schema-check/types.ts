// The shape every dashboard in ../dashboards must have: @grafana/schema's Dashboard (Grafana
// 12.0.2, the pinned image), with the panel options of each panel type typed by that plugin's
// generated schema, instead of the loose Record<string, unknown> of the generic Panel type.
// check.mjs wraps each dashboard JSON in `const dashboard: CheckedDashboard = <json>`, so tsc's
// excess-property and type checks catch misspelt keys and wrong value types.
//
// House rules typed here as well: every panel queries the Prometheus data source, has a title,
// a description and a unit.
import type { Dashboard, FieldConfig, GridPos, Panel, RowPanel } from '@grafana/schema';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen.d.ts';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts';

// The schema's string enums (e.g. LegendDisplayMode.Table = "table") do not accept the plain
// strings that JSON holds; map every string enum to the union of its values.
type Plain<T> = T extends string
  ? `${T}`
  : T extends (infer U)[]
    ? Plain<U>[]
    : T extends object
      ? { [K in keyof T]: Plain<T[K]> }
      : T;

interface PrometheusRef {
  type: 'prometheus';
  uid: string;
}

interface PrometheusTarget {
  datasource: PrometheusRef;
  editorMode?: 'code' | 'builder';
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
  refId: string;
}

type Defaults<Custom> = Omit<FieldConfig, 'custom' | 'unit'> & { unit: string; custom?: Custom };

type PanelBase<Custom> = Omit<Panel, 'type' | 'options' | 'targets' | 'fieldConfig' | 'datasource'> & {
  datasource: PrometheusRef;
  description: string;
  fieldConfig: { defaults: Defaults<Custom>; overrides: Panel['fieldConfig'] extends infer F ? F extends { overrides: infer O } ? O : never : never };
  gridPos: GridPos;
  targets: PrometheusTarget[];
  title: string;
};

type TimeSeriesPanel = PanelBase<TimeSeries.FieldConfig> & { type: 'timeseries'; options: TimeSeries.Options };
type StatPanel = PanelBase<never> & { type: 'stat'; options: Stat.Options };
type Row = Omit<RowPanel, 'panels'> & { panels: Array<TimeSeriesPanel | StatPanel> };

export type CheckedDashboard = Plain<
  Omit<Dashboard, 'panels' | 'uid' | 'title'> & {
    uid: string;
    title: string;
    panels: Array<TimeSeriesPanel | StatPanel | Row>;
  }
>;
