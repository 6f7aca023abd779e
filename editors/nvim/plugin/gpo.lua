-- Starts gpo for dotprompt buffers and defines the :Gpo* commands.
-- require('gpo').setup{...} may be called before or after this runs.
if vim.g.loaded_gpo then
  return
end
vim.g.loaded_gpo = true

local gpo = require('gpo')
local group = vim.api.nvim_create_augroup('gpo', { clear = true })

if gpo.api == 'enable' then
  -- Neovim 0.11+: vim.lsp.enable starts and attaches the client for dotprompt buffers.
  gpo.enable()
else
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = 'dotprompt',
    callback = function(args)
      gpo.attach(args.buf)
    end,
  })
end

vim.api.nvim_create_autocmd('BufWritePost', {
  group = group,
  pattern = gpo.options.example_patterns,
  callback = function(args)
    require('gpo').example_saved(vim.fn.fnamemodify(args.file, ':p'))
  end,
})

local commands = {
  GpoOptimize = 'gpo.optimize',
  GpoStop = 'gpo.stop',
  GpoRescore = 'gpo.rescore',
}
for name, server_command in pairs(commands) do
  vim.api.nvim_create_user_command(name, function()
    require('gpo').command(server_command, 0)
  end, { desc = 'gpo: ' .. server_command })
end

vim.api.nvim_create_user_command('GpoApply', function()
  require('gpo').apply(0)
end, { desc = 'gpo: apply the suggested prompt' })

vim.api.nvim_create_user_command('GpoRestart', function()
  require('gpo').restart()
end, { desc = 'gpo: restart the language server' })
