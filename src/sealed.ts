// Sealed cells (docs/sealed-cells.md) as people see them: a locked card with
// a Run button, then the cell's outputs. The cell's source is only a
// placeholder (`%%warden_sealed v1 key=... version=... cell=...` and the
// ciphertext); the server puts the real code in at run time. The editor is
// taken out of the page, the cell can't be edited, and the page refuses to
// copy, cut, duplicate or drag it elsewhere, so the placeholder is never
// handed out as code.
import { Notification } from '@jupyterlab/apputils';
import { Cell, CodeCell, ICellModel } from '@jupyterlab/cells';
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { lockIcon } from '@jupyterlab/ui-components';
import { PanelLayout, Widget } from '@lumino/widgets';

import { h, refuse } from './dom';

const MAGIC = '%%warden_sealed';
const HEADER = /^%%warden_sealed v(\d+) key=(\S+) version=(\d+) cell=([A-Za-z0-9_-]+)/;
const CELLS_MIME = 'application/vnd.jupyter.cells';

export interface ISealInfo {
  key: string;
  version: string;
}

/** What a cell's source says of its seal; null for ordinary source (as the server's looks_sealed). */
export function sealOf(source: string): ISealInfo | null {
  const text = source.trimStart();
  if (!text.startsWith(MAGIC)) {
    return null;
  }
  const header = HEADER.exec(text);
  return { key: header?.[2] ?? '?', version: header?.[3] ?? '?' };
}

export function isSealed(model: ICellModel | null | undefined): boolean {
  return !!model && model.type === 'code' && sealOf(model.sharedModel.getSource()) !== null;
}

/** Whether the run-related state of a card may run the cell, and if not, why. */
export interface IRunRight {
  allowed: boolean;
  reason: string;
}

/**
 * The cards of one notebook: each sealed code cell gets one in place of its
 * editor, and gets its editor back if its source stops being a placeholder
 * (a manager unsealed it).
 */
export class SealedCards {
  constructor(
    private readonly panel: NotebookPanel,
    private readonly runRight: () => IRunRight,
    private readonly relock: (cell: Cell) => void
  ) {}

  /** Put cards on the sealed cells and take them off the others. */
  update(): void {
    for (const cell of this.panel.content.widgets) {
      if (!this._watched.has(cell)) {
        this._watched.add(cell);
        cell.model.contentChanged.connect(() => this._apply(cell));
      }
      this._apply(cell);
    }
  }

  /** Enable or disable every Run button, after a change of rights. */
  refreshRunButtons(): void {
    for (const card of this._cards.values()) {
      card.showRunRight(this.runRight());
    }
  }

  private _apply(cell: Cell): void {
    const seal = cell.model.type === 'code' ? sealOf(cell.model.sharedModel.getSource()) : null;
    void cell.ready.then(() => {
      if (cell.isDisposed) {
        return;
      }
      const card = this._cards.get(cell);
      if (seal && !card) {
        this._seal(cell, seal);
      } else if (!seal && card) {
        this._unseal(cell, card);
      } else if (seal && card) {
        card.showSeal(seal);
      }
    });
  }

  private _seal(cell: Cell, seal: ISealInfo): void {
    const input = cell.inputArea;
    const editor = cell.editorWidget;
    if (!input || !editor) {
      return;
    }
    cell.addClass(SEALED);
    this.relock(cell);
    // Out of the page, not just hidden: no editor to select, copy or search in.
    editor.parent = null;
    const card = new SealedCard(() => this._run(cell));
    card.showSeal(seal);
    card.showRunRight(this.runRight());
    (input.layout as PanelLayout).addWidget(card);
    this._cards.set(cell, card);
  }

  private _unseal(cell: Cell, card: SealedCard): void {
    this._cards.delete(cell);
    card.dispose();
    cell.removeClass(SEALED);
    const input = cell.inputArea;
    const editor = cell.editorWidget;
    if (input && editor && !editor.parent) {
      (input.layout as PanelLayout).addWidget(editor);
    }
    this.relock(cell);
  }

  private _run(cell: Cell): void {
    const right = this.runRight();
    const notebook = this.panel.content;
    const index = notebook.widgets.indexOf(cell);
    if (!right.allowed || index < 0 || !(cell instanceof CodeCell)) {
      return;
    }
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    notebook.mode = 'command';
    void NotebookActions.runCells(notebook, [cell], this.panel.sessionContext);
  }

  private _cards = new Map<Cell, SealedCard>();
  private _watched = new WeakSet<Cell>();
}

/** The class of a cell shown as a card; such a cell stays read-only whatever the user's level. */
export const SEALED = 'jp-warden-sealed';

class SealedCard extends Widget {
  constructor(run: () => void) {
    super();
    this.addClass('jp-warden-sealed-card');
    this._run = h('button', { className: 'jp-mod-styled jp-mod-accept jp-warden-sealed-run' }, 'Run');
    this._run.onclick = run;
    this._about = h('span', { className: 'jp-warden-sealed-about' });
    const icon = h('span', { className: 'jp-warden-sealed-icon' });
    lockIcon.element({ container: icon, height: '20px', width: '20px' });
    // The Run button on the left: the cell toolbar floats over the right end.
    this.node.append(
      icon,
      this._run,
      h(
        'div',
        { className: 'jp-warden-sealed-text' },
        h('strong', {}, 'Sealed cell'),
        h('span', {}, 'Its code is hidden. Run it to see its output.'),
        this._about
      )
    );
    // Nothing in the card is code: the browser's own copy gets nothing either.
    for (const kind of ['copy', 'cut', 'dragstart']) {
      this.node.addEventListener(kind, event => event.preventDefault());
    }
  }

  showSeal(seal: ISealInfo): void {
    this._about.textContent = `Key ${seal.key}, version ${seal.version}.`;
    this.node.dataset.key = seal.key;
  }

  showRunRight(right: IRunRight): void {
    const button = this._run as HTMLButtonElement;
    button.classList.remove('jp-warden-refused');
    button.disabled = false;
    button.title = 'Run this sealed cell';
    delete button.dataset.reason;
    if (!right.allowed) {
      refuse(button, right.reason);
    }
  }

  private _run: HTMLElement;
  private _about: HTMLElement;
}

// -- what the page refuses to do with sealed cells -----------------------------

/** Commands that would hand out a sealed cell's placeholder as code, or edit it. */
const COPYING = /^notebook:(copy-cell|cut-cell|duplicate-below)$/;
const ALTERING = /^notebook:(change-cell-to-|split-cell|merge-cell|merge-cells)/;

/**
 * Why a command may not run on the selection of `notebook`, or '' if it may.
 * `notebook:enter-edit-mode` on a sealed cell is refused silently: there is
 * no editor to enter.
 */
export function sealedRefusal(id: string, notebook: Notebook): string | null {
  const copying = COPYING.test(id);
  const altering = ALTERING.test(id);
  if (!copying && !altering && id !== 'notebook:enter-edit-mode') {
    return '';
  }
  const index = notebook.activeCellIndex;
  const touched = notebook.widgets.filter(
    (cell, i) =>
      notebook.isSelectedOrActive(cell) ||
      // Merging reaches a neighbour of the active cell.
      (id.startsWith('notebook:merge-cell-') && Math.abs(i - index) === 1)
  );
  if (!touched.some(cell => isSealed(cell.model))) {
    return '';
  }
  if (id === 'notebook:enter-edit-mode') {
    return null;
  }
  return copying
    ? "Sealed cells can't be copied, cut or duplicated: their placeholder is not code. Run them where they are."
    : "A sealed cell can't be changed: edit its source and seal it again (jupyter-warden seal).";
}

/** What this module reads of a Lumino drag event (@lumino/dragdrop's Drag.Event). */
interface ICellDrag extends Event {
  readonly mimeData?: { hasData(mime: string): boolean; getData(mime: string): unknown };
  readonly source?: unknown;
  dropAction: string;
}

/**
 * A sealed cell runs outside the kernel's history (`store_history=False`),
 * so its reply's execution count is 0, which JupyterLab stores as "none" and
 * then never takes the cell out of its running state (`[*]`). Once the
 * execution is over, say so.
 */
export function settleSealedRuns(): void {
  NotebookActions.executed.connect((_, { cell }) => {
    if (isSealed(cell.model) && cell.model.type === 'code') {
      const model = (cell as CodeCell).model;
      if (model.executionState === 'running' && model.executionCount === null) {
        model.executionState = 'idle';
      }
    }
  });
}

/**
 * Lumino drags of notebook cells carry them (and their source as text) to
 * other notebooks, consoles and editors. A drag holding a sealed cell may
 * only move it inside its own notebook; any other drop is stopped before it
 * reaches its target.
 */
export function guardSealedDrops(): void {
  const stop = (event: Event) => {
    const drag = event as ICellDrag;
    if (!drag.mimeData?.hasData(CELLS_MIME)) {
      return;
    }
    const cells = drag.mimeData.getData(CELLS_MIME) as { cell_type?: string; source?: string | string[] }[];
    const sealed = (cells ?? []).some(
      c => c.cell_type === 'code' && sealOf(Array.isArray(c.source) ? c.source.join('') : c.source ?? '') !== null
    );
    if (!sealed) {
      return;
    }
    const source = drag.source instanceof Widget ? drag.source.node : null;
    const target = event.target as Node | null;
    if (source && target && source.contains(target)) {
      return; // a move inside its own notebook
    }
    event.preventDefault();
    event.stopPropagation();
    drag.dropAction = 'none';
    if (event.type === 'lm-drop') {
      Notification.warning("A sealed cell can't be copied out of its notebook.", { autoClose: 4000 });
    }
  };
  for (const kind of ['lm-dragenter', 'lm-dragover', 'lm-drop']) {
    document.addEventListener(kind, stop, true);
  }
}
