-- Headless check of the gpo plugin on Neovim 0.7+, against tests/nvim_fake_server.py.
-- Run: GPO_TEST_DIR=... GPO_TEST_PYTHON=... GPO_FAKE_SERVER=... \
--      nvim --headless -u NONE -i NONE -n -c 'luafile editors/nvim/tests/run.lua'
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local helpers = dofile(here .. '/helpers.lua')
local dir, check, finish = helpers.start('nvim plugin')
local json_decode = (vim.json and vim.json.decode) or vim.fn.json_decode

local gpo = require('gpo')
local config = require('gpo.config')
gpo.setup({
  cmd = { os.getenv('GPO_TEST_PYTHON'), os.getenv('GPO_FAKE_SERVER') },
  settings = {
    models = { task = ' openai/x ' },
    daemon = { address = '' },
    budget = { initial = 40, final = 2.5, decay = 'bogus' },
  },
})

-- Pure parts.
local settings = config.settings(gpo.options)
check(settings.models.task == 'openai/x', 'task model trimmed')
check(settings.models.optimizer == vim.NIL and settings.daemon.address == vim.NIL, 'unset -> null')
check(settings.budget.initial == 40 and settings.budget.final == nil, 'budget words only')
check(settings.budget.decay == nil and settings.autoOptimizeOnSave == false, 'decay/autosave')
local answer = config.configuration_result(
  { { section = 'gpo' }, {}, { section = 'gpo.budget.initial' }, { section = 'gpo.x.y' } },
  settings
)
check(#answer == 4 and answer[1] == settings, 'one answer per item')
check(answer[2] == vim.NIL and answer[3] == 40 and answer[4] == vim.NIL, 'sections')
local fake_fs = { ['/w/p/.git'] = true }
local function fake_exists(path)
  return fake_fs[path] == true
end
check(config.find_root('/w/p/sub/x.prompt', { '.git' }, fake_exists) == '/w/p', 'root marker')
check(config.find_root('/q/x.prompt', { '.git' }, fake_exists) == '/q', 'root fallback')
local venv_cmd = config.server_cmd({}, function(p)
  return p == '/venv/bin/gpo' or p == 'gpo'
end, function()
  return '/venv'
end)
check(venv_cmd[1] == '/venv/bin/gpo' and venv_cmd[2] == 'lsp', 'virtualenv gpo first')
local path_cmd = config.server_cmd({}, function(p)
  return p == 'gpo'
end, function()
  return nil
end)
check(path_cmd[1] == 'gpo', 'gpo on PATH')
check(config.server_cmd({}, function()
  return false
end, function()
  return nil
end) == nil, 'nothing found')
for _, name in ipairs({ 'GpoOptimize', 'GpoStop', 'GpoRescore', 'GpoApply', 'GpoRestart' }) do
  check(vim.fn.exists(':' .. name) == 2, 'command ' .. name)
end

-- The real thing: open a prompt, get the server's report as a diagnostic.
local function report_of(bufnr)
  local diagnostics = vim.diagnostic.get(bufnr)
  if #diagnostics == 0 then
    return nil
  end
  return json_decode(diagnostics[#diagnostics].message)
end

local function wait_report(bufnr, predicate, what)
  local found
  local ok = vim.wait(15000, function()
    local report = report_of(bufnr)
    if report and predicate(report) then
      found = report
      return true
    end
    return false
  end, 50)
  check(ok, 'timed out waiting for ' .. what)
  return found
end

vim.cmd('edit ' .. dir .. '/root1/a.prompt')
local buf = vim.api.nvim_get_current_buf()
check(vim.bo[buf].filetype == 'dotprompt', 'ftdetect: filetype is ' .. vim.bo[buf].filetype)
local report = wait_report(buf, function(r)
  return r.config ~= vim.NIL and r.config ~= nil
end, 'configuration answer')
if report then
  check(report.init.models.task == 'openai/x', 'initializationOptions carry settings')
  check(report.config[1].budget.initial == 40, 'workspace/configuration section gpo')
  check(report.config[2] == 'openai/x', 'workspace/configuration section gpo.models.task')
  check(report.config[3] == vim.NIL, 'foreign section is null')
end

local before = vim.api.nvim_buf_get_lines(buf, 0, 3, false)
local applied
gpo.apply(buf, function(ok)
  applied = ok
end)
check(vim.wait(15000, function()
  return applied ~= nil
end, 50), 'apply finished')
check(applied == true, 'apply succeeded')
local after = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
check(after[4] == 'Say 😀 hello to {{name}}.', 'body edited in UTF-16 units: ' .. tostring(after[4]))
check(vim.deep_equal(before, { after[1], after[2], after[3] }), 'frontmatter unchanged')

vim.cmd('GpoOptimize')
wait_report(buf, function(r)
  return #r.commands > 0 and r.commands[1][1] == 'gpo.optimize'
end, 'gpo.optimize command')

local first_id = gpo.roots()[vim.fn.fnamemodify(dir .. '/root1', ':p:h')]
check(first_id ~= nil, 'client registered for root1')
vim.cmd('edit ' .. dir .. '/root1/sub/b.prompt')
local buf_b = vim.api.nvim_get_current_buf()
check(vim.wait(15000, function()
  return helpers.attached(buf_b)[first_id] ~= nil
end, 50), 'same root, same client')
check(#vim.tbl_keys(helpers.attached(buf_b)) == 1, 'one client on b.prompt')
vim.cmd('edit ' .. dir .. '/root2/c.prompt')
local n_roots = 0
vim.wait(15000, function()
  n_roots = #vim.tbl_keys(gpo.roots())
  return n_roots == 2
end, 50)
check(n_roots == 2, 'one client per root, got ' .. n_roots)

vim.cmd('edit ' .. dir .. '/root1/a.examples.jsonl')
vim.cmd('write')
wait_report(buf, function(r)
  for _, c in ipairs(r.commands) do
    if c[1] == 'watched' then
      return true
    end
  end
  return false
end, 'example save notification')

-- :GpoRestart: new clients, attached to every open prompt buffer; the old ones gone.
local root1 = vim.fn.fnamemodify(dir .. '/root1', ':p:h')
vim.cmd('GpoRestart')
local new_id
check(vim.wait(15000, function()
  new_id = gpo.roots()[root1]
  return new_id ~= nil and new_id ~= first_id
    and helpers.attached(buf)[new_id] ~= nil and helpers.attached(buf_b)[new_id] ~= nil
    and helpers.attached(buf)[first_id] == nil and #vim.tbl_keys(gpo.roots()) == 2
end, 50), 'restart: a new client for root1 on a.prompt and b.prompt, old one gone')

finish()
