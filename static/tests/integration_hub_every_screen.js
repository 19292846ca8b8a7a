/** @odoo-module */
/**
 * Opens every screen of a plan made by tests/test_every_screen.py, in the real web client:
 * each window action in each of its multi-record view types, every filter and group-by of its
 * search panel (each option of date filters and date group-bys), optionally every field of
 * "Add Custom Group", the graph's chart modes; then each listed record's form, each notebook
 * page, each stat button (the screen it opens) and the listed buttons (in the header or a
 * notebook page) that open dialogs: a wizard or a confirmation, closed without confirming.
 *
 * Odoo's clickbot (web/static/src/webclient/clickbot) covers menus, view switches and filters;
 * this adds what it leaves out. Any error dialog, failed RPC, or count of search items that
 * differs from the search view's arch stops the walk with console.error, which fails the test.
 */
import { App } from "@odoo/owl";
import { browser } from "@web/core/browser/browser";
import { rpcBus } from "@web/core/network/rpc";

export const SUCCESS_SIGNAL = "integration_hub: every screen opened";

const MOUSE_EVENTS = ["mouseover", "mouseenter", "mousedown", "mouseup", "click"];
const TIMEOUT_MS = 30000;

const pendingRpcs = new Map();
const failedRpcs = [];
let uiUpdates = 0;
const counts = { views: 0, filters: 0, groupBys: 0, customGroups: 0, forms: 0, pages: 0, buttons: 0 };

function onRpcRequest({ detail }) {
    pendingRpcs.set(detail.data.id, detail.url);
}

function onRpcResponse({ detail }) {
    pendingRpcs.delete(detail.data.id);
    // An RPC aborted because the screen moved on is not a failure; anything else is.
    if (detail.error && detail.error.name !== "ConnectionAbortedError") {
        const { name, message, data } = detail.error;
        failedRpcs.push({ url: detail.url, params: detail.data.params, name, message, data });
    }
}

function onUiUpdated() {
    uiUpdates++;
}

function nextFrame() {
    return new Promise((resolve) => browser.setTimeout(() => requestAnimationFrame(resolve)));
}

function hasScheduledTask() {
    for (const app of App.apps) {
        if (app.scheduler.tasks.size) {
            return true;
        }
    }
    return false;
}

function checkErrors(where) {
    const dialog = document.querySelector(".o_error_dialog");
    if (dialog || failedRpcs.length) {
        const rpcs = failedRpcs.splice(0).map((rpc) => JSON.stringify(rpc));
        throw new Error(
            `${where}: ${dialog ? `error dialog: ${dialog.innerText}` : "failed RPC"}\n${rpcs.join("\n")}`
        );
    }
}

/** Waits until the condition holds and nothing is loading or rendering; fails on any error. */
async function settle(where, condition = () => true) {
    const start = Date.now();
    await nextFrame();
    for (;;) {
        checkErrors(where);
        if (condition() && !pendingRpcs.size && !hasScheduledTask()) {
            await nextFrame();
            checkErrors(where);
            if (condition() && !pendingRpcs.size && !hasScheduledTask()) {
                return;
            }
        }
        if (Date.now() - start > TIMEOUT_MS) {
            throw new Error(
                `${where}: still waiting after ${TIMEOUT_MS / 1000} s for ${condition}` +
                    ` (pending RPCs: ${[...pendingRpcs.values()].join(", ") || "none"})`
            );
        }
        await new Promise((resolve) => browser.setTimeout(resolve, 25));
    }
}

async function click(element, where) {
    if (!element) {
        throw new Error(`${where}: nothing to click`);
    }
    for (const type of MOUSE_EVENTS) {
        element.dispatchEvent(new MouseEvent(type, { bubbles: true, cancelable: true, view: window }));
    }
    await nextFrame();
}

function log(message) {
    browser.console.log(`integration_hub screens: ${message}`);
}

function viewIsShown(viewType) {
    return () => Boolean(document.querySelector(`.o_action_manager .o_view_controller.o_${viewType}_view`));
}

// Search panel --------------------------------------------------------------------------------

const SEARCH_TOGGLER = ".o_control_panel .o_searchview_dropdown_toggler";
const MENUS = {
    filter: ".o_search_bar_menu .o_filter_menu",
    groupBy: ".o_search_bar_menu .o_group_by_menu",
};

function searchItems(kind) {
    const menu = MENUS[kind];
    return [
        ...document.querySelectorAll(
            `${menu} > .o_menu_item:not(.o_add_custom_filter):not(select), ${menu} > .o_accordion`
        ),
    ];
}

async function openSearchMenu(where) {
    if (!document.querySelector(".o_search_bar_menu")) {
        await click(document.querySelector(SEARCH_TOGGLER), `${where}: search panel toggler`);
        await settle(where, () => Boolean(document.querySelector(".o_search_bar_menu")));
    }
}

async function clearFacets(where) {
    let facet;
    while ((facet = document.querySelector(".o_searchview_facet .o_facet_remove"))) {
        await click(facet, `${where}: remove facet`);
        await settle(where);
    }
}

async function tryItem(kind, index, optionIndex, viewType, where) {
    await openSearchMenu(where);
    const item = searchItems(kind)[index];
    let target = item;
    let label = item.innerText.trim();
    if (item.classList.contains("o_accordion")) {
        const toggle = item.querySelector(".o_accordion_toggle");
        label = toggle.innerText.trim();
        if (!item.querySelector(".o_accordion_values")) {
            await click(toggle, `${where}: ${label}`);
            await settle(where);
        }
        const option = searchItems(kind)[index].querySelectorAll(".o_accordion_values .o_item_option")[optionIndex];
        label = `${label} > ${option.innerText.trim()}`;
        target = option;
    }
    const here = `${where}, ${kind === "filter" ? "filter" : "group by"} "${label}"`;
    await click(target, here);
    await settle(here, viewIsShown(viewType));
    await clearFacets(here);
    await settle(here, viewIsShown(viewType));
}

async function optionCount(kind, index, where) {
    await openSearchMenu(where);
    const item = searchItems(kind)[index];
    if (!item.classList.contains("o_accordion")) {
        return 0;
    }
    if (!item.querySelector(".o_accordion_values")) {
        await click(item.querySelector(".o_accordion_toggle"), `${where}: accordion`);
        await settle(where);
    }
    const count = searchItems(kind)[index].querySelectorAll(".o_accordion_values .o_item_option").length;
    if (!count) {
        throw new Error(`${where}: the ${kind} "${item.innerText.trim()}" shows no option`);
    }
    return count;
}

async function walkSearch(action, viewType, firstView, customGroups, where) {
    if (!document.querySelector(SEARCH_TOGGLER)) {
        throw new Error(`${where}: no search panel`);
    }
    // A filter only changes the domain: once per action is enough (the clickbot also clicks
    // them in every view). A group-by changes how each view type draws: in every view.
    for (const kind of firstView ? ["filter", "groupBy"] : ["groupBy"]) {
        await openSearchMenu(where);
        const found = searchItems(kind).length;
        const expected = action.expected[kind];
        if (found !== expected) {
            const labels = searchItems(kind).map((el) => el.innerText.trim());
            throw new Error(`${where}: ${found} ${kind} items in the search panel (${labels}), the arch declares ${expected}`);
        }
        for (let index = 0; index < found; index++) {
            const options = await optionCount(kind, index, where);
            for (let option = 0; option < Math.max(options, 1); option++) {
                await tryItem(kind, index, option, viewType, where);
                counts[kind === "filter" ? "filters" : "groupBys"]++;
            }
        }
    }
    if (customGroups && firstView) {
        await openSearchMenu(where);
        const select = document.querySelector(`${MENUS.groupBy} select.o_add_custom_group_menu`);
        const fields = select ? [...select.options].filter((o) => !o.disabled).map((o) => o.value) : [];
        for (const field of fields) {
            const here = `${where}, custom group "${field}"`;
            await openSearchMenu(here);
            const current = document.querySelector(`${MENUS.groupBy} select.o_add_custom_group_menu`);
            current.value = field;
            current.dispatchEvent(new Event("change", { bubbles: true }));
            await settle(here, viewIsShown(viewType));
            await clearFacets(here);
            await settle(here, viewIsShown(viewType));
            counts.customGroups++;
        }
    }
}

// Views -----------------------------------------------------------------------------------------

async function openView(env, action, viewType, props = {}) {
    const where = `${action.xmlid} (${viewType}${props.resId ? ` #${props.resId}` : ""})`;
    await env.services.action.doAction(action.id, { clearBreadcrumbs: true, viewType, props });
    await settle(where, viewIsShown(viewType));
    counts.views++;
    return where;
}

async function walkGraphModes(where) {
    for (const mode of ["bar", "line", "pie"]) {
        const button = document.querySelector(`.o_graph_button[data-mode="${mode}"]`);
        await click(button, `${where}: ${mode} chart`);
        await settle(`${where}, ${mode} chart`, viewIsShown("graph"));
    }
}

async function openFirstRowForm(where) {
    const cell = document.querySelector(
        ".o_list_view .o_data_row .o_data_cell:not(.o_handle_cell):not(.o_list_button)"
    );
    if (!cell) {
        throw new Error(`${where}: the list shows no record to open`);
    }
    await click(cell, `${where}: first row`);
    await settle(`${where}, first row`, viewIsShown("form"));
    counts.forms++;
}

function visible(element) {
    return element.offsetParent !== null;
}

async function leaveScreen(before, where) {
    // A button opened a screen (or a dialog): check it, close a dialog, then go back.
    await settle(where, () => uiUpdates > before || Boolean(document.querySelector(".o_dialog")));
    const dialog = document.querySelector(".o_dialog");
    if (dialog) {
        log(`${where} opened a dialog: ${dialog.querySelector(".modal-title")?.innerText}`);
        await click(dialog.querySelector(".modal-header .btn-close"), `${where}: close dialog`);
        await settle(where, () => !document.querySelector(".o_dialog"));
    } else {
        const crumbs = [...document.querySelectorAll(".o_breadcrumb .breadcrumb-item, .o_breadcrumb .active")];
        log(`${where} opened ${crumbs.map((el) => el.innerText.trim()).join(" / ")}`);
    }
    counts.buttons++;
}

const STAT_BUTTONS = ".o_form_view .o-form-buttonbox button.oe_stat_button";

async function walkForm(env, action, resId) {
    const where = await openView(env, action, "form", { resId });
    counts.forms++;
    if (!document.querySelector(".o_form_view .o_form_sheet_bg, .o_form_view .o_form_nosheet")) {
        throw new Error(`${where}: no form sheet`);
    }
    const pages = document.querySelectorAll(".o_form_view .o_notebook_headers .nav-link");
    const dialogButtons = [];
    for (let index = 0; index < pages.length; index++) {
        const page = document.querySelectorAll(".o_form_view .o_notebook_headers .nav-link")[index];
        const here = `${where}, page "${page.innerText.trim()}"`;
        await click(page, here);
        await settle(here, () =>
            document.querySelectorAll(".o_form_view .o_notebook_headers .nav-link")[index].classList.contains("active")
        );
        counts.pages++;
        for (const name of action.buttons) {
            const button = document.querySelector(`.o_form_view .o_notebook button[name="${name}"]`);
            if (button && visible(button)) {
                dialogButtons.push([index, name]);
            }
        }
    }
    for (const name of action.buttons) {
        const button = document.querySelector(`.o_form_view .o_form_statusbar button[name="${name}"]`);
        if (button && visible(button)) {
            dialogButtons.push([null, name]);
        }
    }
    if (document.querySelector(".o_form_view .o-form-buttonbox .o_button_more")) {
        throw new Error(`${where}: stat buttons hidden under "More" are not walked`);
    }
    const statCount = [...document.querySelectorAll(STAT_BUTTONS)].filter(visible).length;
    if (action.statButtons && !statCount) {
        throw new Error(`${where}: no stat button found, the form declares some that are always shown`);
    }
    for (let index = 0; index < statCount; index++) {
        if (index) {
            await openView(env, action, "form", { resId });
        }
        const button = [...document.querySelectorAll(STAT_BUTTONS)].filter(
            visible
        )[index];
        const here = `${where}, stat button "${button.innerText.trim().replace(/\s+/g, " ")}"`;
        const before = uiUpdates;
        await click(button, here);
        await leaveScreen(before, here);
    }
    for (const [pageIndex, name] of dialogButtons) {
        await openView(env, action, "form", { resId });
        if (pages.length && pageIndex !== null) {
            await click(document.querySelectorAll(".o_form_view .o_notebook_headers .nav-link")[pageIndex], where);
            await settle(where);
        }
        const here = `${where}, button ${name}`;
        const before = uiUpdates;
        await click(document.querySelector(`.o_form_view button[name="${name}"]`), here);
        await leaveScreen(before, here);
    }
}

async function walkAction(env, action, customGroups) {
    log(`action ${action.xmlid}: ${action.viewTypes.join(", ")}`);
    let first = true;
    for (const viewType of action.viewTypes) {
        if (viewType === "form") {
            continue;
        }
        const where = await openView(env, action, viewType);
        if (viewType === "graph") {
            await walkGraphModes(where);
        }
        await walkSearch(action, viewType, first, customGroups, where);
        first = false;
        if (viewType === "list" && action.viewTypes.includes("form")) {
            await openView(env, action, "list");
            await openFirstRowForm(where);
        }
    }
    if (action.viewTypes.includes("form")) {
        for (const resId of action.resIds) {
            await walkForm(env, action, resId);
        }
    }
}

export async function walkEveryScreen(plan) {
    const env = odoo.__WOWL_DEBUG__.root.env;
    rpcBus.addEventListener("RPC:REQUEST", onRpcRequest);
    rpcBus.addEventListener("RPC:RESPONSE", onRpcResponse);
    env.bus.addEventListener("ACTION_MANAGER:UI-UPDATED", onUiUpdated);
    try {
        await settle("home");
        for (const action of plan.actions) {
            await walkAction(env, action, plan.customGroups);
        }
        log(`opened ${JSON.stringify(counts)}`);
        browser.console.log(SUCCESS_SIGNAL);
    } catch (error) {
        browser.console.error(`integration_hub screens: ${error.message}\n${error.stack}`);
    } finally {
        rpcBus.removeEventListener("RPC:REQUEST", onRpcRequest);
        rpcBus.removeEventListener("RPC:RESPONSE", onRpcResponse);
        env.bus.removeEventListener("ACTION_MANAGER:UI-UPDATED", onUiUpdated);
    }
}
